"""The last steps of any process that enters a container, the first one or an `exec`:
its stdio (pipes or a pseudo-terminal), working directory, user, capabilities, signal
dispositions, and the exec itself, with a failure told back in Docker's words.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import termios
from dataclasses import dataclass

from vmctl_agent import syscalls as sc
from vmctl_agent.runtime import capabilities
from vmctl_agent.runtime.spec import ProcessSpec

_TIOCSPTLCK = 0x40045431
# Python ignores SIGPIPE and SIGXFSZ; the shim ignores SIGINT, SIGTERM and SIGHUP.
_IGNORED_BY_US = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_TIOCGPTPEER = 0x5441


@dataclass
class Stdio:
    """A container process's stdin/stdout/stderr: pipes, or a pseudo-terminal.

    The terminal is made inside the container, from its own /dev/ptmx, so the process finds
    its tty in its /dev/pts; the master comes back to us over a socket pair (SCM_RIGHTS)."""

    tty: bool
    stdin: tuple[int, int] | None  # (child's read end, our write end)
    stdout: tuple[int, int] | None  # (our read end, child's write end); a tty: (master, -1)
    stderr: tuple[int, int] | None
    channel: tuple[int, int] | None = None  # a tty's master travels (ours, child's)

    @classmethod
    def make(cls, tty: bool, open_stdin: bool) -> Stdio:
        if tty:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            return cls(True, None, None, None, (ours.detach(), theirs.detach()))
        stdin = os.pipe() if open_stdin else None
        return cls(False, stdin, os.pipe(), os.pipe())

    def parent_fds(self) -> list[int]:
        """Our ends: output to read (and stdin to write)."""
        ends = (self.stdout, self.stderr, self.channel)
        fds = [pair[0] for pair in ends if pair]
        return fds + ([self.stdin[1]] if self.stdin else [])

    def child_fds(self) -> list[int]:
        ends = (self.stdout, self.stderr, self.channel)
        fds = [pair[1] for pair in ends if pair and pair[1] >= 0]
        return fds + ([self.stdin[0]] if self.stdin else [])

    def attach_child(self, *, console: bool = False) -> None:
        """In the container's process: make these its fds 0, 1 and 2."""
        if self.tty:
            slave = _container_pty(self.channel[1])
            if console:
                _bind_console(slave)
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for std in (0, 1, 2):
                os.dup2(slave, std)
            return
        stdin = self.stdin[0] if self.stdin else os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(self.stdout[1], 1)
        os.dup2(self.stderr[1], 2)

    def receive_master(self) -> bool:
        """In the parent, once the child has exec'd: take the terminal's master end."""
        if not self.tty or self.stdout is not None:
            return True
        with socket.socket(fileno=self.channel[0]) as sock:
            _, fds, _, _ = socket.recv_fds(sock, 1, 1)
        self.channel = None
        if not fds:
            return False
        self.stdout = (fds[0], -1)
        return True

    def input_fd(self) -> int | None:
        if self.tty:
            return self.stdout[0] if self.stdout else None
        return self.stdin[1] if self.stdin else None


def resize_terminal(fd: int, rows: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _container_pty(channel: int) -> int:
    """Open a pty in the container's devpts, send the master home, return the slave."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    with socket.socket(fileno=channel) as sock:
        socket.send_fds(sock, [b"m"], [master])
    os.close(master)
    return slave


def _bind_console(slave: int) -> None:
    """/dev/console is the container's terminal, as runc makes it."""
    if not os.path.lexists("/dev/console"):
        os.close(os.open("/dev/console", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    sc.mount(f"/proc/self/fd/{slave}", "/dev/console", None, sc.MS_BIND)


def enter(process: ProcessSpec) -> None:
    """Working directory, user and capabilities: the last steps before exec."""
    os.umask(0o022)
    # Made through symlinks as they resolve inside the container (we are past pivot_root).
    os.makedirs(os.path.realpath(process.cwd), exist_ok=True)
    os.chdir(process.cwd)
    keep = capabilities.mask(process.capabilities)
    capabilities.drop_bounding(keep)
    user = process.user
    os.setgroups(list(user.groups))
    os.setgid(user.gid)
    os.setuid(user.uid)
    capabilities.apply(keep, is_root=user.uid == 0)
    if process.no_new_privileges:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    sc.set_huge_pages(True)  # the engine's opt-out is not the container's (as under dockerd)
    for sig in _IGNORED_BY_US:  # ignored signals stay ignored across exec; handlers do not
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def keep_error_pipe(err_w: int) -> int:
    """fd 3 stays open (close-on-exec) to tell the shim about a failed exec; the rest close."""
    if err_w != 3:
        os.dup2(err_w, 3, inheritable=False)
    sc.close_range(4)
    return 3


def exec_command(process: ProcessSpec, err_w: int) -> None:
    """exec the command; on failure tell the shim in Docker's words (127, 126) and exit."""
    command = process.args[0]
    env = dict(e.split("=", 1) for e in process.env)
    try:
        os.execvpe(command, list(process.args), env)
    except FileNotFoundError:
        if "/" in command:
            fail(err_w, f'exec: "{command}": stat {command}: no such file or directory', 127)
        fail(err_w, f'exec: "{command}": executable file not found in $PATH', 127)
    except PermissionError:
        fail(err_w, f'exec: "{command}": permission denied', 126)
    except BaseException as e:
        fail(err_w, f'exec: "{command}": {e}', 126)


def fail(err_w: int, message: str, code: int) -> None:
    try:
        os.write(err_w, json.dumps({"error": message, "exit_code": code}).encode())
    finally:
        os._exit(code)


def read_all(fd: int) -> bytes:
    """Everything until the writer closes (or execs): a child's error report."""
    data = sc.read_to_end(fd)
    os.close(fd)
    return data
