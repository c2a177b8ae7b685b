"""The agent's watch over its containers: the runtime's one exit watch waits for every running
container's shim to end (a pidfd each), and hands each end to a thread of its own, which reaps
the shim, publishes `die` (`oom` before it, `destroy` after it for --rm), and brings the
container back as its restart policy says, after the back-off (`die`, then `start` again),
which waits on the runtime's one timer thread. Beside it, a container with a healthcheck has
its probes run when that timer says, each run's results kept in health.json and each change of
status published (`health_status: healthy`). At its own start the agent takes over the
containers found running, and starts those whose policy wants them back (an agent or a VM that
restarted): so `vmctl start` brings back what the user left running, as Docker Desktop does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
import threading
import time

from vmctl_agent.api import events
from vmctl_agent.errors import AgentError
from vmctl_agent.runtime import logs as logfile
from vmctl_agent.runtime import pids, probes, records
from vmctl_agent.runtime.healthcheck import Health, Healthcheck
from vmctl_agent.runtime.index import Container, ContainerNotFound


def watch(engine, container: Container) -> None:
    """Follow `container`, which was just started, through its ends and restarts."""
    _follow(engine, container)


def take_over(engine) -> None:
    """At the agent's start: follow what runs, and bring back what its policy wants back."""
    runtime = engine.runtime
    for container in runtime.list(all=True):
        if container.state.running:
            watch(engine, container)
        elif _comes_back(container, runtime):
            threading.Thread(target=_bring_back, args=(engine, container), daemon=True).start()


def _comes_back(container: Container, runtime) -> bool:
    state = container.state
    policy = container.config.restart_policy
    ended = state.status == "exited" and not runtime.restarts.pending(container.id)
    return ended and policy.wants(
        state.exit_code, state.restart_count, stopped=state.manually_stopped, held=False
    )


def _bring_back(engine, container: Container) -> None:
    revived = _revive(engine, container.id, fresh=True)
    if revived is not None:
        _follow(engine, revived)


def _follow(engine, container: Container) -> None:
    """This run of `container`: its probes now, and its end when the exit watch sees it."""
    engine.runtime.restarts.following(container.id, container.state.started_at)
    run_over = threading.Event()
    _check_health(engine, container, run_over)
    state = container.state
    then = functools.partial(_ended, engine, container, run_over)
    engine.runtime.exits.when_ended(state.shim_pid, state.shim_start_time, then)


def _ended(engine, container: Container, run_over: threading.Event) -> None:
    """On a thread of its own: publish the end, then plan the restart its policy may want."""
    ended = _wait_for_end(engine, container)
    run_over.set()
    if ended is not None:
        _restart(engine, ended)


def _check_health(engine, container: Container, run_over: threading.Event) -> None:
    """Probe this run of `container` as its healthcheck says, until `run_over`."""
    check = container.config.health_check
    if check is not None:
        health = container.health or Health(container.state.started_at)  # a new agent resumes
        started = logfile.parse_time(container.state.started_at)
        _Probes(engine, container, check, run_over, health, started).next()


@dataclasses.dataclass
class _Probes:
    """One run's probes, one after another: each the interval after the last one ended."""

    engine: object
    container: Container
    check: Healthcheck
    run_over: threading.Event
    health: Health
    started: float

    def next(self) -> None:
        delay = self.check.wait_before_next(self.health.status, time.time() - self.started)
        self.engine.runtime.timers.after(delay, self.probe)

    def probe(self) -> None:
        """On a thread of its own, when due; none while paused, as dockerd."""
        if self.run_over.is_set():
            return
        if not _paused(self.engine, self.container.id):
            self._record(probes.probe(self.engine.runtime, self.container.id, self.check))
        if not self.run_over.is_set():
            self.next()

    def _record(self, result: dict) -> None:
        if self.run_over.is_set():
            return  # it ended meanwhile: a probe that could not run says nothing of its health
        changed = self.health.add(result, self.check)
        with contextlib.suppress(FileNotFoundError):  # removed meanwhile
            records.write_health(self.container.directory, self.health.to_json())
        if changed:
            self.engine.runtime.changed()
            action = f"health_status: {self.health.status}"
            events.container_event(self.engine, action, self.container.id, self.container)


def _wait_for_end(engine, container: Container) -> Container | None:
    """The container as it ended (after publishing its end), or None if it removed itself."""
    attributes = _attributes(container)
    try:
        current = engine.runtime.get(container.id)
        while current.state.running and current.state.started_at == container.state.started_at:
            pids.wait_for_exit(current.state.shim_pid, None)
            current = engine.runtime.get(container.id)
    except ContainerNotFound:  # --rm: it removed itself
        current = engine.runtime.removed(container)
    if current.state.oom_killed:
        engine.events.publish("container", "oom", container.id, **attributes)
    code = str(current.state.exit_code)
    engine.events.publish("container", "die", container.id, exitCode=code, **attributes)
    events.volume_events(engine, "unmount", container)
    if not container.config.create_options.auto_remove:
        return current
    state = current.state
    if pids.same_process(state.shim_pid, state.shim_start_time):
        pids.reap(state.shim_pid, timeout=30)  # it is deleting the container
    engine.events.publish("container", "destroy", container.id, **attributes)
    engine.volumes.reap()  # its anonymous volumes go with it
    return None


def _restart(engine, ended: Container) -> None:
    """If its policy wants it back: after the back-off, unless stopped, killed or removed
    meanwhile (that sets `cancelled`)."""
    planned = engine.runtime.plan_restart(ended)
    if planned is not None:
        delay, cancelled = planned
        engine.runtime.timers.after(delay, functools.partial(_back, engine, ended.id, cancelled))


def _back(engine, container_id: str, cancelled: threading.Event) -> None:
    """The back-off is over: start it again and follow the new run, unless cancelled."""
    if not cancelled.is_set():
        revived = _revive(engine, container_id, fresh=False)
        if revived is not None:
            _follow(engine, revived)


def _revive(engine, container_id: str, *, fresh: bool) -> Container | None:
    try:
        engine.volumes.prepare_start(engine.runtime.get(container_id))
        revived = engine.runtime.revive(container_id, fresh=fresh)
    except AgentError as e:  # as dockerd: a failed restart ends the policy's attempts
        print(f"vmctl-agent: cannot restart {container_id[:12]}: {e}", file=sys.stderr)
        return None
    if revived is not None:
        events.volume_events(engine, "mount", revived)
        events.container_event(engine, "start", revived.id, revived)
    return revived


def _paused(engine, container_id: str) -> bool:
    try:
        return engine.runtime.get(container_id).paused
    except ContainerNotFound:
        return False


def _attributes(container: Container) -> dict:
    attributes = {"name": container.name, "image": container.config.image}
    attributes.update(container.config.create_options.labels)
    return attributes
