"""Finding containers, and their status derived from their records each time they are read.

Status is derived, never stored: a "running" record is checked against exit.json (if it names
that run's shim) and against the shim and the container's process (pid + start time, so a
reused pid is not mistaken for ours) every time it is read; `restarting` is an ended run with
a restart pending in this life of the agent, `paused` what the cgroup freezer says. So a
restarted agent finds its running containers again, and those that ended meanwhile are
reported with their real exit status; state.json is written once per start (and marked when
the user stops the container), and an end is only ever written by the shim (or for a shim
that was killed, by the agent in its place).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from vmctl_agent import atomic
from vmctl_agent.errors import AgentError
from vmctl_agent.runtime import cgroups, logs, naming, pids, records, spec
from vmctl_agent.runtime.containerconfig import BUILT_IN_NETWORKS, ContainerConfig
from vmctl_agent.runtime.endings import Endings
from vmctl_agent.runtime.exitwatch import ExitWatch
from vmctl_agent.runtime.healthcheck import Health
from vmctl_agent.runtime.netns import Networking
from vmctl_agent.runtime.records import State
from vmctl_agent.runtime.restarts import Restarts
from vmctl_agent.runtime.timers import Timers

_NAME = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]+")


class ContainerNotFound(AgentError):
    """404: `No such container: x`."""


class ContainerConflict(AgentError):
    """409: running, name taken, ambiguous prefix."""


@dataclass
class Container:
    config: ContainerConfig
    state: State
    directory: Path
    paused: bool = False  # derived at each read from the cgroup freezer

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def name(self) -> str:
        return self.config.name

    @functools.cached_property
    def health(self) -> Health | None:
        """This run's health (`starting` until its first probe); the last run's once it ended;
        None without a healthcheck or before any start."""
        if self.config.health_check is None or self.state.status == "created":
            return None
        recorded = records.read_health(self.directory)
        if recorded is not None and (
            recorded.get("run") == self.state.started_at or not self.state.running
        ):
            return Health.from_json(recorded)
        return Health(self.state.started_at) if self.state.running else None

    @property
    def health_status(self) -> str:
        """starting, healthy, unhealthy, or none (the `health` filter's words)."""
        health = self.health
        return "none" if health is None else health.status

    @property
    def restarting(self) -> bool:
        """Ended, and waiting out the back-off before its restart policy starts it again."""
        return self.state.status == "restarting"

    def inspect(self) -> dict:
        """`docker inspect`'s fields."""
        return {
            **self.config.inspect(),
            "State": {
                "Status": "paused" if self.paused else self.state.status,
                "Running": self.state.running or self.restarting,  # as dockerd says it
                "Paused": self.paused,
                "Restarting": self.restarting,
                "OOMKilled": self.state.oom_killed,
                "Dead": False,
                "Pid": self.state.pid if self.state.running else 0,
                "ExitCode": self.state.exit_code,
                "Error": self.state.error,
                "StartedAt": self.state.started_at,
                "FinishedAt": self.state.finished_at,
                **({"Health": self.health.inspect()} if self.health else {}),
            },
            "RestartCount": self.state.restart_count,
            "LogPath": str(self.directory / "container-json.log"),
        }


class ContainerIndex:
    """The containers under `root`, found by id, prefix or name, with their status derived."""

    def __init__(self, root: Path, groups: cgroups.Cgroups):
        self.root = root
        self.cgroups = groups
        self._configs: dict[str, ContainerConfig] = {}
        self.endings = Endings()
        self.restarts = Restarts()
        self.exits = ExitWatch()  # the supervision's one thread for every running container
        self.timers = Timers()  # and one for their healthcheck probes and restart back-offs
        self._changes = itertools.count(1)
        self.generation = 0
        self._ends_seen: dict[str, tuple[int, int]] = {}  # id → the shim whose end we saw
        self.networking = Networking()  # the network room's hooks, when there is one

    def changed(self) -> None:
        """A container was made, started, ended or removed, or was found to have ended or
        gone: views built from the containers' records before now (the API's cached list)
        are out of date."""
        self.generation = next(self._changes)

    # -- finding ----------------------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """By id, unique id prefix, or name (with or without its leading slash)."""
        ref = ref.strip()
        if not ref:
            raise ContainerNotFound("No such container: ")
        direct = self.root / ref
        if re.fullmatch(r"[a-f0-9]{64}", ref) and direct.is_dir():
            return self._load(direct)
        matches = [c for c in self._all() if c.name == ref.lstrip("/")]
        if not matches and re.fullmatch(r"[a-f0-9]+", ref):
            matches = [c for c in self._all() if c.id.startswith(ref)]
            if len(matches) > 1:
                raise ContainerConflict(f"multiple IDs found with provided prefix: {ref}")
        if not matches:
            raise ContainerNotFound(f"No such container: {ref}")
        return matches[0]

    def list(self, *, all: bool = False) -> list[Container]:
        self.endings.reap(timeout=1.0)  # a listing shows no exited shim still around
        found = sorted(self._all(), key=lambda c: c.config.created, reverse=True)
        return [c for c in found if all or c.state.running or c.restarting]

    def _all(self) -> Iterator[Container]:
        for path in self.root.iterdir():
            if not path.name.startswith("."):
                try:
                    yield self._load(path)
                except ContainerNotFound:
                    continue  # removed meanwhile

    def _all_configs(self) -> Iterator[ContainerConfig]:
        """Names and the like never change: no need to derive every container's status."""
        for path in self.root.iterdir():
            if not path.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    yield self._config(path)

    def _load(self, directory: Path) -> Container:
        try:
            config = self._config(directory)
            state = records.read_state(directory)
        except FileNotFoundError:
            self.changed()  # removed since it was listed
            raise ContainerNotFound(f"No such container: {directory.name}") from None
        container = Container(config, state, directory)
        self._refresh(container)
        return container

    def _config(self, directory: Path) -> ContainerConfig:
        """config.json never changes after create: parsed once, then kept."""
        config = self._configs.get(directory.name)
        if config is None:
            config = ContainerConfig.from_json(records.read_config(directory))
            self._configs[directory.name] = config
        elif not directory.is_dir():
            self._configs.pop(directory.name, None)
            raise FileNotFoundError(directory)
        return config

    def configs(self) -> list[ContainerConfig]:
        """Every container's configuration, without deriving any status (cheap)."""
        return list(self._all_configs())

    def _new_name(self, wanted: str) -> str:
        if not wanted:
            taken = {c.name for c in self._all_configs()}
            return naming.generate(lambda n: f"/{n}" in taken)
        if not _NAME.fullmatch(wanted):
            raise spec.InvalidSpec(
                f"Invalid container name ({wanted}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )
        name = "/" + wanted.lstrip("/")
        for other in self._all_configs():
            if "/" + other.name == name:
                raise ContainerConflict(
                    f'Conflict. The container name "{name}" is already in use by container '
                    f'"{other.id}". You have to remove (or rename) that container to be able '
                    "to reuse that name."
                )
        return name[1:]

    def locked(self, container: Container) -> contextlib.AbstractContextManager[None]:
        """Held while something must not see the container started or removed (docker cp)."""
        return self._locked(container)

    @contextlib.contextmanager
    def _locked(self, container: Container) -> Iterator[None]:
        """The container's directory, flocked (start and remove take turns)."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(atomic.locked(container.directory, directory=True))
            except FileNotFoundError:
                raise ContainerNotFound(f"No such container: {container.id}") from None
            yield

    def users_of(self, image_id: str) -> list[tuple[str, bool]]:
        """Containers made from `image_id`, for `docker rmi`'s checks."""
        return [(c.id, c.state.running) for c in self._all() if c.config.image_id == image_id]

    # -- deriving the status ----------------------------------------------------------------

    def _refresh(self, container: Container) -> None:
        state = container.state
        if state.status == "exited" and self.restarts.pending(container.id):
            state.status = "restarting"
        if not state.running:
            return
        ended = records.this_runs_end(container.directory, state)
        if ended is None and not pids.same_process(state.shim_pid, state.shim_start_time):
            pids.reap(state.shim_pid)
            ended = records.this_runs_end(container.directory, state)  # just written?
            if ended is None and not container.directory.exists():
                self.changed()
                raise ContainerNotFound(f"No such container: {container.id}")  # --rm: gone
            if ended is None and self._started_again(container):
                return self._refresh(container)  # what we read was an earlier run's
            if ended is None:
                ended = self._orphaned(container)
        if ended is not None:
            self._mark_exited(container, ended)
        else:
            container.paused = self.cgroups.frozen(container.id)

    def _started_again(self, container: Container) -> bool:
        """Whether a newer run has started since `container.state` was read (a restart while
        this reader was held up: its shim gone, its end overwritten by the next run's); if so,
        the newer run's state takes its place. Taken for orphaned, the new run was killed."""
        try:
            now = records.read_state(container.directory)
        except FileNotFoundError:
            return False
        held = container.state
        if (now.shim_pid, now.shim_start_time) == (held.shim_pid, held.shim_start_time):
            return False
        container.state = now
        return True

    def _orphaned(self, container: Container) -> dict:
        """The shim was killed: nobody records this container's output or exit any more, so
        it is stopped rather than left running unsupervised."""
        self.cgroups.kill_all(container.id)
        pids.send_signal(container.state.pid, container.state.start_time, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.cgroups.remove(container.id)
        error = "the container's supervisor was killed; the container was stopped"
        state = container.state
        ended = {"exit_code": 137, "finished_at": logs.now(), "error": error}
        ended |= {"shim": state.shim_pid, "shim_start_time": state.shim_start_time}
        atomic.write_json(container.directory / "exit.json", ended, durable=False)  # its stead
        return ended

    def _mark_exited(self, container: Container, ended: dict) -> None:
        state = container.state
        self.endings.ended(container.id, state.shim_pid, state.shim_start_time)
        shim = (state.shim_pid, state.shim_start_time)
        if self._ends_seen.get(container.id) != shim:  # derived at every read: say it once
            if not container.config.create_options.auto_remove:
                records.make_end_durable(container.directory)  # before anyone is told
            self._ends_seen[container.id] = shim
            self.changed()
            if container.config.network not in BUILT_IN_NETWORKS:
                self.networking.leave(container.id, state.started_at)
        state.status = "exited"
        state.exit_code = int(ended.get("exit_code", 0))
        state.oom_killed = bool(ended.get("oom_killed", False))
        state.finished_at = ended.get("finished_at", logs.now())
        state.error = ended.get("error", "")  # not saved: derived again at each read
        if self.restarts.pending(container.id):
            state.status = "restarting"

    def _network_gone(self, container: Container) -> None:
        if container.config.network not in BUILT_IN_NETWORKS:
            self.networking.leave(container.id, container.state.started_at)
            self.networking.forget(container.id)

    def removed(self, container: Container) -> Container:
        """An auto-removed container, as it ended (from the status its shim left behind)."""
        self.changed()  # whoever asks has found it gone
        self._network_gone(container)
        tombstone = self.root / ".exits" / f"{container.id}.json"
        ended = atomic.read_json_or_none(tombstone) or {"exit_code": 0}
        state = State(**{**asdict(container.state), "status": "removed"})
        state.exit_code = int(ended.get("exit_code", 0))
        state.oom_killed = bool(ended.get("oom_killed", False))
        state.finished_at = ended.get("finished_at", logs.now())
        return Container(container.config, state, container.directory)
