"""Containers: Docker's lifecycle over one state directory per container.

    <data-root>/containers/<id>/
        config.json state.json exit.json   the records (records.py)
        container-json.log   the output, in Docker's json-file format
        upper/ work/         the overlay's writable layer and its work directory
        ctl.sock             stdin, resizes and output taps, served by the shim
    <data-root>/containers/.exits/<id>.json   exit status of an auto-removed container
    <data-root>/containers/.init/             the init layer (rootfs.make_init_layer)
    <data-root>/containers/.rootfs/           where each container mounts its root, in its
                                             own mount namespace

Finding containers and deriving their status from these records is index.py's part.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

from vmctl_agent import atomic
from vmctl_agent.runtime import cgroups, execs, isolation, logs, pids, records, rootfs, shim, spec
from vmctl_agent.runtime import taps as output_taps
from vmctl_agent.runtime.changes import ContainerChanges
from vmctl_agent.runtime.containerconfig import (
    BUILT_IN_NETWORKS,
    INIT_LAYER,
    MOUNT_POINT,
    build_config,
)
from vmctl_agent.runtime.index import Container, ContainerConflict, ContainerNotFound
from vmctl_agent.runtime.records import ZERO_TIME, State
from vmctl_agent.store.content import remove_tree
from vmctl_agent.store.images import ImageStore


class Runtime(ContainerChanges):
    """Creates and runs containers from the images in `images`."""

    def __init__(self, data_root: Path, images: ImageStore, groups: cgroups.Cgroups | None = None):
        root = data_root / "containers"
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        (root / ".exits").mkdir(exist_ok=True)
        (root / MOUNT_POINT).mkdir(mode=0o700, exist_ok=True)
        rootfs.make_init_layer(str(root / INIT_LAYER))
        records.sweep(root)
        super().__init__(root, groups or cgroups.detect())
        self.images = images
        images.containers_using = self.users_of
        self.waiting_taps = output_taps.Pending()

    # -- create -----------------------------------------------------------------------------

    def create(self, options: spec.CreateOptions) -> Container:
        """A new container in state "created"; nothing is left behind if any check fails."""
        image = self.images.get(options.image)
        self.endings.reap()
        with atomic.locked(self.root / ".lock"):
            name = self._new_name(options.name)
            container_id = secrets.token_hex(32)
            layers = [
                str(self.images.content.layer_dir(d)) for d in reversed(image.record.diff_ids)
            ]
            config = build_config(container_id, name, options, image, layers, self.cgroups)
            networked = config.network not in BUILT_IN_NETWORKS
            if networked:
                self.networking.created(config)
            try:
                records.publish(self.root, container_id, config.to_json())
            except BaseException:
                if networked:
                    self.networking.forget(container_id)
                raise
            finally:
                self.changed()
        self._configs[container_id] = config
        return Container(config, State(), self.root / container_id)

    def _save(self, container: Container) -> None:
        """Not fsynced, after a crash every container is dead anyway and its status is
        derived again (a state.json torn by the crash reads as exited, see _load); but for a
        container whose restart policy brings it back after a crash of the VM, the record
        that it was started is what brings it back, so that one is made durable."""
        state = asdict(container.state)
        durable = container.config.restart_policy.name != "no"
        try:
            atomic.write_json(container.directory / "state.json", state, durable=durable)
        except FileNotFoundError:
            if not container.config.create_options.auto_remove:
                raise  # else: it ran, ended and removed itself before we wrote its start
        finally:
            self.changed()

    # -- start, wait, signals -----------------------------------------------------------------

    def start(self, ref: str) -> Container:
        """A user's start: the restart count, back-off and any stop start over, as in dockerd."""
        self.endings.reap()
        container = self.get(ref)
        with self._locked(container):
            container = self._load(container.directory)
            if container.state.running or container.restarting:
                return container
            self.restarts.release(container.id)
            self._launch(container)
        return container

    def plan_restart(self, ended: Container) -> tuple[float, threading.Event] | None:
        """If `ended`'s policy brings it back (and it has not been started since): the delay,
        and the event that a stop, kill or remove sets to cancel it. It is `restarting` now."""
        self.restarts.deciding(ended.id)
        try:
            current = self.get(ended.id)
        except ContainerNotFound:
            return None
        state = current.state
        if state.running or state.started_at != ended.state.started_at:
            return None  # started again meanwhile
        held = self.restarts.held(current.id)
        if not current.config.restart_policy.wants(
            state.exit_code, state.restart_count, stopped=state.manually_stopped, held=held
        ):
            return None
        ran_for = logs.parse_time(state.finished_at) - logs.parse_time(state.started_at)
        planned = self.restarts.schedule(current.id, ran_for)
        self.changed()
        return planned

    def revive(self, ref: str, *, fresh: bool = False) -> Container | None:
        """Start an ended container as its restart policy wants (`fresh`: at the agent's start,
        which dockerd counts as a new start); None if it was stopped, removed or started
        meanwhile. A failed start ends the policy's attempts, as in dockerd."""
        try:
            container = self.get(ref)
            with self._locked(container):
                container = self._load(container.directory)
                held = self.restarts.held(container.id)  # stopped or killed meanwhile
                wanted = (fresh or container.restarting) and not held
                if container.state.running or not wanted:
                    return None
                self._launch(container, restarted=not fresh)
                return container
        except ContainerNotFound:
            return None
        finally:
            self.restarts.done(ref)
            self.changed()

    def _launch(self, container: Container, *, restarted: bool = False) -> None:
        config, state = container.config, container.state
        records.drop_unnamed_end(container.directory)
        self._end_unrecorded_run(config.id)
        started_at = logs.now()  # before the shim can record the end: a run may be that short
        joined = None
        taps = self.waiting_taps.take(config.id)  # attaches made before this start
        try:
            if config.network not in BUILT_IN_NETWORKS:
                joined = self.networking.join(config, started_at)
            donor = isolation.ipc_donor(config.create_options, self.get)
            launch = config.launch(container.directory, self.cgroups.version, joined, donor)
            launch = replace(launch, taps=tuple(t.fileno() for t in taps))
            started = shim.spawn(launch, self.cgroups, config.cgroup_limits)  # (its cgroup too)
        except BaseException as e:
            if joined is not None:
                self.networking.leave(config.id, started_at)
            if isinstance(e, Exception):
                self._failed_start(container, e)
            raise
        finally:
            for tap in taps:
                tap.close()  # the shim has its own copies; a failed start ends the attaches
        state.restart_count = state.restart_count + 1 if restarted else 0
        state.manually_stopped = False
        state.status, state.pid, state.start_time = "running", started.pid, started.start_time
        state.shim_pid, state.shim_start_time = started.shim_pid, started.shim_start_time
        state.started_at = started_at
        state.exit_code, state.error, state.oom_killed = 0, "", False
        state.finished_at = ZERO_TIME
        self.endings.started(config.id, started.done)
        self._save(container)

    def _end_unrecorded_run(self, container_id: str) -> None:
        """Processes in the cgroup of a container that has no run recorded: an agent killed
        between a shim's start and its record of it. Killed, so a container runs once."""
        if self.cgroups.exists(container_id) and self.cgroups.procs(container_id):
            self.cgroups.kill_all(container_id)
            self.cgroups.remove(container_id)

    def _failed_start(self, container: Container, error: Exception) -> None:
        """Recorded as Docker records it; a --rm container is removed by a failed start."""
        exit_code = error.exit_code if isinstance(error, shim.StartError) else 128
        if isinstance(error, shim.StartError):
            self.cgroups.remove(container.id)
        container.state.exit_code, container.state.error = exit_code, str(error)
        self._save(container)
        if container.config.create_options.auto_remove:
            self._discard(container, {"exit_code": exit_code, "error": str(error)})

    def wait(self, ref: str, timeout: float | None = None) -> Container:
        """Block until the container is not running (Docker's `not-running` condition)."""
        container = self.get(ref)
        deadline = None if timeout is None else time.monotonic() + timeout
        while container.state.running:
            done = self.endings.watch(container.id)
            try:
                pids.wait_for_exit(container.state.shim_pid, deadline, done)
            finally:
                if done is not None:
                    os.close(done)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"container {container.id[:12]} is still running")
            try:
                container = self._load(container.directory)
            except ContainerNotFound:  # --rm: its shim removed it
                state = container.state
                self.endings.ended(container.id, state.shim_pid, state.shim_start_time)
                return self.removed(container)
        state = container.state
        if container.config.create_options.auto_remove and state.status != "created":
            if pids.same_process(state.shim_pid, state.shim_start_time):
                pids.reap(state.shim_pid, timeout=30)  # it is removing the container
            return self.removed(container)
        return container

    def _discard(self, container: Container, ended: dict) -> None:
        """Remove an auto-remove container, leaving its exit status for `wait`."""
        self.waiting_taps.discard(container.id)
        atomic.write_json(self.root / ".exits" / f"{container.id}.json", ended)
        doomed = self.root / f".removing-{container.id}"
        os.rename(container.directory, doomed)
        self.changed()
        remove_tree(doomed)

    def open_output(self, ref: str) -> socket.socket:
        """A tap on the container's output from now on (taps.py): the running shim's, else
        its next run's (an attach made before `docker run`'s or `docker start -a`'s start).
        OSError if a running container's shim serves none (one started by an older agent)."""
        container = self.get(ref)
        with self._locked(container):  # not while a start is handing the taps over
            container = self._load(container.directory)
            if container.state.running:
                return self._control(container, b"output\n")
            return self.waiting_taps.add(container.id)

    def attach_stdin(self, ref: str) -> socket.socket:
        """A socket whose bytes become the container's stdin (for OpenStdin containers)."""
        container = self.get(ref)
        if not container.config.create_options.open_stdin:
            raise ContainerConflict(f"Container {container.id} was not created with stdin open")
        return self._control(container, b"stdin\n")

    def resize(self, ref: str, rows: int, cols: int) -> None:
        """Set a TTY container's terminal size (a container without one has none to set)."""
        container = self.get(ref)
        if container.config.create_options.tty or not container.state.running:
            self._control(container, f"resize {int(rows)} {int(cols)}\n".encode()).close()

    def _control(self, container: Container, request: bytes) -> socket.socket:
        """A request to the shim over ctl.sock."""
        if not container.state.running:
            raise ContainerConflict(f"Container {container.id} is not running")
        dirfd = os.open(container.directory, os.O_RDONLY | os.O_DIRECTORY)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(f"/proc/self/fd/{dirfd}/ctl.sock")
            sock.sendall(request)
        except OSError:
            sock.close()
            raise
        finally:
            os.close(dirfd)
        return sock

    def kill(self, ref: str, sig: int = signal.SIGKILL) -> None:
        """As dockerd: the user stopped it (unless-stopped stays down); SIGKILL or the stop
        signal also keep `always` from restarting it, in this life of the agent. SIGKILL
        returns once the container has ended."""
        container = self.get(ref)
        if not (container.state.running or container.restarting):
            raise ContainerConflict(f"Container {container.id} is not running")
        if sig in (signal.SIGKILL, container.config.stop_signal) or container.restarting:
            self.restarts.hold(container.id)
        container = self._mark_stopped(container)
        if container.state.running:
            self._signal(container, sig)
            if sig == signal.SIGKILL:  # as dockerd: a kill returns once the container is dead
                with contextlib.suppress(TimeoutError, ContainerNotFound):
                    self.wait(container.id, timeout=60)

    def _signal(self, container: Container, sig: int) -> None:
        """A paused container is thawed once signalled, so that it can act on it (dockerd)."""
        pids.send_signal(container.state.pid, container.state.start_time, sig)
        if container.paused:
            self.cgroups.thaw(container.id)

    def _mark_stopped(self, container: Container) -> Container:
        """Recorded under the lock a restart takes: it is then either done (and the run
        returned is the new one) or never done."""
        with self._locked(container):
            durable = container.config.restart_policy.name != "no"
            records.mark_stopped(container.directory, durable=durable)
            return self._load(container.directory)

    def stop(self, ref: str, timeout: float | None = None, sig: int | None = None) -> Container:
        """The stop signal (or `sig`), up to `timeout` seconds' grace (None: its StopTimeout,
        else 10; -1: no limit), then SIGKILL; no restart policy brings it back (until the
        agent restarts, for `always`)."""
        container = self.get(ref)
        timeout = container.config.stop_timeout if timeout is None else timeout
        self.restarts.hold(container.id)
        container = self._mark_stopped(container)
        if not container.state.running:
            return container
        self._signal(container, container.config.stop_signal if sig is None else sig)
        try:
            return self.wait(container.id, timeout=None if timeout < 0 else timeout)
        except TimeoutError:
            pids.send_signal(container.state.pid, container.state.start_time, signal.SIGKILL)
            return self.wait(container.id, timeout=30)

    def _restart_due(self, container: Container) -> bool:
        """Restarting, or ended a moment ago with its policy's decision still to come."""
        if container.restarting:
            return True
        state = container.state
        if state.running or not self.restarts.undecided(container.id, state.started_at):
            return False
        held = self.restarts.held(container.id)
        policy = container.config.restart_policy
        return policy.wants(
            state.exit_code, state.restart_count, stopped=state.manually_stopped, held=held
        )

    def restart(self, ref: str, timeout: float | None = None, sig: int | None = None) -> Container:
        self.stop(ref, timeout, sig)
        return self.start(ref)

    def remove(self, ref: str, *, force: bool = False) -> None:
        """Refused while running unless forced; leaves no mount, cgroup or process behind."""
        container = self.get(ref)
        status = "restarting" if self._restart_due(container) else container.state.status
        if (container.state.running or status == "restarting") and not force:
            raise ContainerConflict(
                f"You cannot remove a {status} container {container.id}. Stop "
                "the container before attempting removal or force remove"
            )
        self.restarts.hold(container.id)
        container = self.get(ref)
        if container.state.running:
            self.cgroups.kill_all(container.id)
            pids.send_signal(container.state.pid, container.state.start_time, signal.SIGKILL)
            self.wait(container.id, timeout=30)
        with self._locked(container):
            if self.cgroups.exists(container.id):
                self.cgroups.remove(container.id)
            shim.release_shared_shm(str(container.directory / "shm"))  # its shim was killed
            doomed = self.root / f".removing-{container.id}"
            os.rename(container.directory, doomed)
            self.changed()
        self._configs.pop(container.id, None)
        self._ends_seen.pop(container.id, None)
        self.waiting_taps.discard(container.id)
        self.restarts.forget(container.id)
        self._network_gone(container)
        self.endings.forget(container.id)
        remove_tree(doomed)
        self.endings.reap(timeout=1.0)  # the shims done by now: no zombie outlives its container

    def exec(
        self,
        ref: str,
        cmd: tuple[str, ...],
        *,
        env: tuple[str, ...] = (),
        user: str = "",
        working_dir: str = "",
        tty: bool = False,
        open_stdin: bool = False,
    ) -> execs.ExecProcess:
        """`docker exec`: `cmd` in the running container, confined like its first process."""
        container = self.get(ref)
        if not container.state.running:
            raise ContainerConflict(f"Container {container.id} is not running")
        if container.paused:
            raise ContainerConflict(
                f"Container {container.id} is paused, unpause the container before exec"
            )
        if not cmd:
            raise spec.InvalidSpec("No exec command specified")
        base = container.config.process_spec
        merged = dict(e.split("=", 1) for e in base.env)
        for name, sep, value in (e.partition("=") for e in env):
            if sep:
                merged[name] = value
            else:
                merged.pop(name, None)  # a bare NAME unsets it, as in dockerd
        process = spec.ProcessSpec(
            args=tuple(cmd),
            env=tuple(f"{k}={v}" for k, v in merged.items()),
            cwd=working_dir or base.cwd,
            user=self._exec_user(container, user) if user else base.user,
            tty=tty,
            capabilities=base.capabilities,
            no_new_privileges=base.no_new_privileges,
        )
        join = functools.partial(self.cgroups.join, container.id)
        return execs.start(container.state.pid, join, process, open_stdin)

    @staticmethod
    def _exec_user(container: Container, user: str) -> spec.User:
        """`docker exec -u`: looked up in the image, with the container's --group-add."""
        config = container.config
        return spec.resolve_user(user, config.layers, config.create_options.group_add)

    # -- output -------------------------------------------------------------------------------

    def open_log(self, ref: str):
        """The log file, opened now: an attach made before start keeps reading it even if
        the container is auto-removed the moment it exits."""
        path = self.get(ref).directory / "container-json.log"
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        return os.fdopen(fd, "rb")

    def logs(self, ref: str, log_file=None, **options) -> Iterator[logs.Entry]:
        container = self.get(ref)
        directory = container.directory

        def running() -> bool:
            try:
                return self._load(directory).state.running
            except ContainerNotFound:
                return False

        source = log_file or str(directory / "container-json.log")
        return logs.read(source, running=running, **options)

    def stats(self, ref: str) -> cgroups.Stats:
        container = self.get(ref)
        if not container.state.running:
            raise ContainerConflict(f"Container {container.id} is not running")
        return self.cgroups.stats(container.id)
