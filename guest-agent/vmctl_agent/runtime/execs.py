"""`docker exec`: a second process in a running container, in its namespaces, its cgroup, and
under the same confinement (user, capabilities, no-new-privileges) as its first process.

    agent ──fork──▶ helper: non-dumpable, joins the cgroup, setns into each namespace
                      └─fork──▶ the process, inside the PID namespace: stdio, user, caps, exec

The helper stays outside the container's PID namespace and waits, so the agent gets the exit
status; the process inside is non-dumpable until its exec replaces our Python with the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from vmctl_agent import syscalls as sc
from vmctl_agent.runtime import pids, process
from vmctl_agent.runtime.shim import StartError
from vmctl_agent.runtime.spec import ProcessSpec

# setns order: the mount namespace last, once nothing else needs the host's /proc.
NAMESPACES = ("ipc", "uts", "net", "cgroup", "pid", "mnt")


@dataclass
class ExecProcess:
    """A running exec: our ends of its stdio, and the helper to wait for."""

    helper_pid: int
    stdio: process.Stdio
    exit_code: int | None = None

    @property
    def stdout(self) -> int:
        return self.stdio.stdout[0]

    @property
    def stderr(self) -> int | None:
        return self.stdio.stderr[0] if self.stdio.stderr else None

    @property
    def stdin(self) -> int | None:
        return self.stdio.input_fd()

    def wait(self) -> int:
        """The exit code (128 + signal when killed), once the process has ended."""
        if self.exit_code is None:
            _, status = os.waitpid(self.helper_pid, 0)
            self.exit_code = os.waitstatus_to_exitcode(status)
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL the process inside (the helper's child): a probe past its timeout."""
        try:
            with open(f"/proc/{self.helper_pid}/task/{self.helper_pid}/children") as f:
                inside = [int(pid) for pid in f.read().split()]
        except OSError:
            return  # the helper is gone: so is what it waited for
        for pid in inside:
            with contextlib.suppress(OSError):
                pids.send_signal(pid, pids.start_time(pid), signal.SIGKILL)

    def close(self) -> None:
        for fd in self.stdio.parent_fds():
            with contextlib.suppress(OSError):
                os.close(fd)


def start(container_pid: int, join: Callable[[], None], spec: ProcessSpec, open_stdin: bool):
    """Start `spec` in the container whose first process is `container_pid`; `join` puts the
    (single-threaded) helper in the container's cgroup, as the container's own first process
    joins it (Cgroups.join: on v1 as a thread, which skips the kernel's wait for an RCU grace
    period per hierarchy, a health probe's biggest cost on a loaded host)."""
    namespaces = _open_namespaces(container_pid)
    stdio = process.Stdio.make(spec.tty, open_stdin)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        helper = os.fork()
        if helper == 0:
            os.close(err_r)
            _helper(namespaces, join, spec, stdio, err_w)
    finally:
        for fd in (err_w, *namespaces.values(), *stdio.child_fds()):
            os.close(fd)
    failure = process.read_all(err_r)
    running = ExecProcess(helper, stdio)
    if failure or not stdio.receive_master():
        failure = failure or b'{"error": "no terminal for the exec process", "exit_code": 126}'
        running.wait()
        running.close()
        answer = json.loads(failure)
        raise StartError(answer["error"], answer["exit_code"])
    return running


def _open_namespaces(pid: int) -> dict[str, int]:
    """Open them all first: after joining the mount namespace, /proc is the container's."""
    found = {}
    for name in NAMESPACES:
        path = f"/proc/{pid}/ns/{name}"
        if name == "cgroup" and os.readlink(path) == os.readlink("/proc/self/ns/cgroup"):
            continue  # cgroup v1: the container shares ours
        found[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    return found


def _helper(namespaces: dict[str, int], join, spec, stdio, err_w: int) -> None:
    code = 128
    try:
        sc.prctl(sc.PR_SET_DUMPABLE, 0)
        join()
        for fd in namespaces.values():
            sc.setns(fd)
        inside = os.fork()
        if inside == 0:
            _inside(spec, stdio, err_w)
        os.close(err_w)
        for fd in stdio.child_fds() + stdio.parent_fds():
            os.close(fd)
        _, status = os.waitpid(inside, 0)
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
    except BaseException as e:
        process.fail(err_w, f"cannot enter the container: {e}", 126)
    finally:
        os._exit(code)


def _inside(spec: ProcessSpec, stdio: process.Stdio, err_w: int) -> None:
    """In the container's PID namespace: finish like a first process does, then exec."""
    try:
        stdio.attach_child()
        process.enter(spec)
        err_w = process.keep_error_pipe(err_w)
    except BaseException as e:
        process.fail(err_w, f"cannot start the exec process: {e}", 126)
    process.exec_command(spec, err_w)
