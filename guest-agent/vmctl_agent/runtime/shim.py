"""Starting a container: the shim that supervises it and the first process that becomes it.

    agent ──fork──▶ shim ──unshare(PID), fork──▶ container's PID 1
      ▲               │  logs, exit.json, cgroup      │ cgroup (v1), namespaces, rootfs,
      │               │  ctl.sock, output taps        │ user, capabilities, exec
      └── a pipe: the shim's answer (one line), then EOF once the end is recorded

The shim is a forked copy of the agent (no exec: a fresh Python costs a second under the VM's
emulation), detached so that the agent can die and come back: it owns the container's output
and records its exit status in exit.json. It is non-dumpable, and the container's own first
process is alone in its PID namespace until it execs, so nothing in a container can reach the
host's Python through /proc/<pid>/exe.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import json
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from vmctl_agent import atomic
from vmctl_agent import syscalls as sc
from vmctl_agent.errors import AgentError
from vmctl_agent.runtime import capabilities, logconfig, pids, process, rootfs, ulimits
from vmctl_agent.runtime import control as ctl
from vmctl_agent.runtime import logs as logfile
from vmctl_agent.runtime.cgroupfs import Limits
from vmctl_agent.runtime.spec import ProcessSpec
from vmctl_agent.runtime.taps import DRAIN_GRACE, Taps
from vmctl_agent.store.content import remove_tree

_READ = 64 * 1024
_NO_CGROUP = "cannot put the container in its cgroup"


class StartError(AgentError):
    """The container's command could not be started; `exit_code` is what Docker reports."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Launch:
    """Everything the shim needs, decided before the fork."""

    name: str
    process: ProcessSpec
    plan: rootfs.RootfsPlan
    hostname: str
    namespaces: int
    state_dir: str
    netns: str = ""  # a network namespace to enter (bound on a file, or another's /proc)
    ipc_ns: str = ""  # an IPC namespace to enter (`--ipc container:`: the donor's /proc)
    shared_shm: str = ""  # `--ipc shareable`: /dev/shm's tmpfs, mounted on the host here
    open_stdin: bool = False
    stdin_once: bool = False
    auto_remove: bool = False  # `docker run --rm`: the shim removes the container at exit
    ulimits: tuple[tuple[str, int, int], ...] = ()  # `--ulimit`s, set just before exec
    log_rotation: logconfig.Rotation = logconfig.NO_ROTATION  # `--log-opt max-size/max-file`
    console_size: tuple[int, ...] = ()  # a terminal's first (rows, columns)
    taps: tuple[int, ...] = ()  # attaches made before the start: their sockets (taps.py)

    @property
    def log_path(self) -> str:
        return f"{self.state_dir}/container-json.log"

    @property
    def exit_path(self) -> str:
        return f"{self.state_dir}/exit.json"


@dataclass(frozen=True)
class Started:
    pid: int
    shim_pid: int
    start_time: int
    shim_start_time: int
    done: int  # read end of a pipe the shim closes once exit.json is written (ours to close)


def spawn(launch: Launch, cgroups, limits: Limits) -> Started:
    """Make the container's cgroup with `limits`, start the shim and the container; returns
    once the command has been exec'd.

    The cgroup is made while the shim starts (a fork takes milliseconds on either side): the
    first to need it, the container's first process or (v2) the shim, waits for our word; if
    it cannot be made, they are told to give up and the error is raised here as it was. The
    shim is our child, in a session of its own; when it ends, whoever sees that first reaps it
    (pids.reap), and if we are gone by then, init does. Its answer is one line on a pipe it
    then keeps open until the container's end is recorded: closing it tells a waiter sooner
    than the shim's own exit, which unmaps a whole copy of the agent first."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    capabilities.last_cap()  # read here, once: the container's first process inherits it
    gc.freeze()  # the shim touches few objects: keep the copied memory shared
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        _shim(launch, cgroups, ready_w, go_r)
    gc.unfreeze()
    os.close(ready_w)
    os.close(go_r)
    _make_cgroup(launch.name, cgroups, limits, go_w, pid, ready_r)
    try:
        answer = json.loads(_read_answer(ready_r))
    except ValueError:
        answer = {"error": "the container's supervisor died while starting it", "exit_code": 128}
    if "error" in answer:
        os.close(ready_r)
        pids.reap(pid, timeout=1.0)
        raise StartError(answer["error"], answer["exit_code"])
    pid, shim_pid = answer["pid"], answer["shim"]
    return Started(pid, shim_pid, answer["start_time"], answer["shim_start_time"], ready_r)


def _make_cgroup(name: str, cgroups, limits: Limits, go_w: int, shim: int, ready_r: int) -> None:
    try:
        cgroups.create(name, limits)
    except BaseException:
        os.close(go_w)  # end of file, no word: the shim and its child give up
        os.close(ready_r)
        pids.reap(shim, timeout=1.0)
        raise
    os.write(go_w, b"g")
    os.close(go_w)


def _wait_for_cgroup(go_r: int) -> None:
    """Until the agent has made the container's cgroup (see spawn)."""
    word = os.read(go_r, 1)
    os.close(go_r)
    if word != b"g":
        raise OSError(errno.ECANCELED, "the agent could not make the container's cgroup")


def _read_answer(fd: int) -> bytes:
    """Up to a newline (or EOF): the shim's answer; the pipe stays open after it."""
    data = b""
    while not data.endswith(b"\n") and (chunk := os.read(fd, 4096)):
        data += chunk
    return data


# -- the shim -----------------------------------------------------------------------------------


def _shim(launch: Launch, cgroups, ready_w: int, go_r: int) -> None:
    status = 1
    try:
        os.setsid()  # the agent's terminal and signals are not ours
        gc.disable()
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        ready_w, go_r, *taps = _keep_only(ready_w, go_r, *launch.taps)
        status = _run(launch, cgroups, ready_w, go_r, taps)
    except BaseException as e:  # report, never unwind into the agent's code
        _report(ready_w, {"error": f"container supervisor failed: {e}", "exit_code": 128})
    finally:
        if launch.shared_shm:
            release_shared_shm(launch.shared_shm)
        os._exit(status)


def _keep_only(*fds: int) -> list[int]:
    """Close every inherited fd (the agent's sockets, files) but `fds`, moved to 3, 4, ..."""
    spare = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 32) for fd in fds]  # clear of 3, 4, ...
    for target, fd in enumerate(spare, start=3):
        os.dup2(fd, target, inheritable=False)
    sc.close_range(3 + len(fds))
    devnull = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(devnull, std)
    os.close(devnull)
    return list(range(3, 3 + len(fds)))


def _run(launch: Launch, cgroups, ready_w: int, go_r: int, taps: list[int]) -> int:
    if launch.shared_shm:
        _mount_shared_shm(launch)
    stdio = process.Stdio.make(launch.process.tty, launch.open_stdin)
    if launch.namespaces & sc.CLONE_NEWPID:  # else `--pid host`
        sc.unshare(sc.CLONE_NEWPID)
    sync_r, sync_w = os.pipe()
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        for fd in (sync_w, err_r, ready_w, *taps):
            os.close(fd)
        _container(launch, cgroups, stdio, sync_r, err_w, go_r)
    for fd in (sync_r, err_w, *stdio.child_fds()):
        os.close(fd)
    try:
        if cgroups.joins_itself:
            os.close(go_r)  # the child waits for it
        else:
            _wait_for_cgroup(go_r)
            cgroups.add(launch.name, pid)
    except Exception as e:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        _report(ready_w, {"error": f"{_NO_CGROUP}: {e}", "exit_code": 128})
        return 1
    with contextlib.suppress(BrokenPipeError):  # it may have failed already: err_r says
        os.write(sync_w, b"g")
    os.close(sync_w)
    failure = process.read_all(err_r)
    if failure or not stdio.receive_master():
        os.waitpid(pid, 0)
        _report(ready_w, json.loads(failure or b'{"error": "no terminal", "exit_code": 128}'))
        return 0
    # Before the report: logs may be followed, and a terminal resized, once start returns.
    log = logfile.LogWriter(launch.log_path, launch.log_rotation)
    control = ctl.bind(launch.state_dir)
    me = os.getpid()
    _report(
        ready_w,
        {
            "pid": pid,
            "start_time": pids.start_time(pid),
            "shim": me,
            "shim_start_time": pids.start_time(me),
        },
    )
    _supervise(launch, cgroups, pid, stdio, log, control, taps)
    os.close(ready_w)  # recorded: tell the agent now, not after our slow exit
    return 0


def _mount_shared_shm(launch: Launch) -> None:
    """On the host, where joiners can bind it; unmounted when the container ends."""
    os.makedirs(launch.shared_shm, mode=0o700, exist_ok=True)
    flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    size = launch.plan.shm_size or rootfs.SHM_SIZE
    sc.mount("shm", launch.shared_shm, "tmpfs", flags, f"mode=1777,size={size}")


def release_shared_shm(path: str) -> None:
    """Unmount a shareable container's /dev/shm (gone already is fine)."""
    with contextlib.suppress(OSError):
        sc.umount(path, sc.MNT_DETACH)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def _report(fd: int, answer: dict) -> None:
    """One line; the pipe stays open (see spawn)."""
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(answer).encode() + b"\n")


def _supervise(
    launch: Launch,
    cgroups,
    pid: int,
    stdio: process.Stdio,
    log: logfile.LogWriter,
    control: socket.socket,
    tap_fds: list[int],
) -> None:
    """Copy output to the log and the attached clients' taps until the container is gone and
    its pipes are drained; then record how it ended. A client that does not keep up pauses
    the reading (taps.py); once the container has ended, it gets DRAIN_GRACE, then is let go."""
    sel = selectors.DefaultSelector()
    outputs = {stdio.stdout[0]: "stdout"} | ({stdio.stderr[0]: "stderr"} if stdio.stderr else {})
    taps = Taps(sel, [socket.socket(fileno=fd) for fd in tap_fds])
    sel.register(control, selectors.EVENT_READ, "control")
    pidfd = os.pidfd_open(pid)
    sel.register(pidfd, selectors.EVENT_READ, "exit")
    reading, ended_at = False, None
    while outputs or ended_at is None:
        wait = None
        if ended_at is not None and taps.full:
            wait = ended_at + DRAIN_GRACE - time.monotonic()
            if wait <= 0:
                taps.drop_stuck()
        wanted = not taps.full  # paused while a client is BACKLOG behind
        if reading != wanted:
            reading = wanted
            for fd, stream in outputs.items():
                if reading:
                    sel.register(fd, selectors.EVENT_READ, stream)
                else:
                    sel.unregister(fd)
        for key, _ in sel.select(None if wait is None else max(wait, 0)):
            if key.data == "exit":
                ended_at = time.monotonic()
                sel.unregister(pidfd)
            elif key.data == "control":
                ctl.accept(key.fileobj, sel, stdio, taps)
            elif key.data == "stdin":
                ctl.forward_stdin(key.fileobj, sel, stdio, launch.stdin_once)
            elif key.data == "tap":
                taps.writable(key.fileobj)
            elif not _copy(key.fd, key.data, log, taps):
                sel.unregister(key.fd)
                del outputs[key.fd]
    log.close()
    taps.finish()
    ctl.unbind(control, launch.state_dir)  # the run is over: nothing to ask its shim
    _record_exit(launch, cgroups, pid)


def _copy(fd: int, stream: str, log: logfile.LogWriter, taps: Taps) -> bool:
    try:
        data = os.read(fd, _READ)
    except OSError as e:
        if e.errno == errno.EIO:  # a pty whose last holder is gone
            return False
        raise
    if data:
        log.write(stream, data)
        taps.send(stream, data)
    return bool(data)


def _record_exit(launch: Launch, cgroups, pid: int) -> None:
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    exit_code = 128 - code if code < 0 else code
    oom = cgroups.oom_killed(launch.name)
    record = {"exit_code": exit_code, "oom_killed": oom, "finished_at": logfile.now()}
    record |= {"shim": os.getpid(), "shim_start_time": pids.start_time(os.getpid())}  # this run's
    if launch.shared_shm:  # before exit.json: whoever waits may remove the directory at once
        release_shared_shm(launch.shared_shm)
    with contextlib.suppress(Exception):  # if this fails, the agent removes it with the container
        cgroups.remove(launch.name)  # before exit.json: whoever waits may remove at once
    atomic.write_json(Path(launch.exit_path), record, durable=False)
    if launch.auto_remove:
        _remove_container(launch, record)


def _remove_container(launch: Launch, record: dict) -> None:
    """--rm: leave the exit status where `wait` looks for it, then unpublish and delete."""
    state_dir = Path(launch.state_dir)
    atomic.write_json(state_dir.parent / ".exits" / f"{launch.name}.json", record)
    doomed = state_dir.parent / f".removing-{launch.name}"
    os.rename(state_dir, doomed)
    remove_tree(doomed)


# -- the container's first process ---------------------------------------------------------------


def _enter(path: str, kind: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.setns(fd, kind)
    finally:
        os.close(fd)


def _container(
    launch: Launch, cgroups, stdio: process.Stdio, sync_r: int, err_w: int, go_r: int
) -> None:
    """Runs in the new PID namespace as PID 1; ends in exec or in _exit."""
    if cgroups.joins_itself:  # first: nothing of ours runs outside it either
        try:
            _wait_for_cgroup(go_r)
            cgroups.join(launch.name)
        except BaseException as e:
            process.fail(err_w, f"{_NO_CGROUP}: {e}", 128)
    else:
        os.close(go_r)  # the shim waits for it
    try:
        cgroup_ns = launch.namespaces & sc.CLONE_NEWCGROUP
        sc.unshare(launch.namespaces & ~(sc.CLONE_NEWCGROUP | sc.CLONE_NEWPID))
        if launch.netns:
            _enter(launch.netns, sc.CLONE_NEWNET)
        if launch.ipc_ns:
            _enter(launch.ipc_ns, sc.CLONE_NEWIPC)
        if launch.namespaces & sc.CLONE_NEWUTS:  # else `--uts host`: the host's name
            sc.sethostname(launch.hostname)
        if not cgroups.joins_itself:
            os.read(sync_r, 1)  # until the shim has moved us into the cgroup
        os.close(sync_r)
        if cgroup_ns:
            # A cgroup namespace is rooted where its maker stands: be in the container's
            # cgroup first, or it (and /sys/fs/cgroup inside) is the agent's service cgroup.
            sc.unshare(cgroup_ns)
        rootfs.setup(launch.plan)
        stdio.attach_child(console=True)
        if launch.process.tty and len(launch.console_size) == 2:
            process.resize_terminal(0, *launch.console_size)
        ulimits.apply(launch.ulimits)
        process.enter(launch.process)
        err_w = process.keep_error_pipe(err_w)
    except BaseException as e:
        process.fail(err_w, f"failed to create the container: {e}", 128)
    process.exec_command(launch.process, err_w)
