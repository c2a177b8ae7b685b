"""A real OpenSSH server on loopback for SSH tests that need no VM: its own host key, config,
and authorized key, run in the foreground by the test and killed after it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from vmctl import keys, sshmux
from vmctl.ssh import Endpoint, openssh_options, pinned_known_hosts

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        if not Path(SSHD).exists():
            raise RuntimeError(
                "sshd is missing: apt-get install openssh-server (scripts/install.sh)"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        workdir.chmod(0o700)
        self.host = keys.ensure(workdir / "host_key", "test-host")
        self.user = keys.ensure(workdir / "user_key", "test-user")
        (workdir / "authorized_keys").write_text(self.user.public_openssh + "\n")
        self.port = port or free_port()
        config = workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {workdir / 'host_key'}\n"
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPidFile none\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "AllowStreamLocalForwarding yes\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
            "StrictModes no\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stderr=open(workdir / "sshd.log", "wb"),  # noqa: SIM115 - the child keeps it
        )
        deadline = time.monotonic() + 120  # a loaded 2-core machine takes its time
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"sshd did not start: {(workdir / 'sshd.log').read_text()}")
        self.endpoint = Endpoint(
            "127.0.0.1", self.port, "root", workdir / "user_key", self.host.public_openssh
        )

    def stop(self) -> None:
        """Kill sshd and its per-connection children (they setsid, so no process group holds
        them): every session ends at once, as when a VM reboots.

        The tree is frozen (SIGSTOP) before it is killed: a connection accepted while the
        children were being listed would otherwise fork a child the list missed, which then
        outlives the kill and keeps serving its client."""
        doomed = _freeze_tree(self.process.pid)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


def _freeze_tree(root: int) -> list[int]:
    """Stop `root` and all its descendants, until a listing finds none still running."""
    stopped: set[int] = set()
    while True:
        tree = [root, *_descendants(root)]
        fresh = [pid for pid in tree if pid not in stopped]
        if not fresh:
            return tree
        for pid in fresh:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
            stopped.add(pid)
        while not all(_halted(pid) for pid in fresh):  # a signal is taken, not sent, later
            time.sleep(0.01)


def _halted(pid: int) -> bool:
    """Stopped, dead or a zombie: it can fork no more."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in "TtZX"


def _descendants(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def openssh_to(sshd: Sshd, workdir: Path) -> list[str]:
    """OpenSSH's `ssh` arguments to log in to `sshd`, its host key pinned in `workdir`."""
    known_hosts = pinned_known_hosts(sshd.endpoint, workdir / "known_hosts", "vmctl-test")
    return openssh_options(sshd.endpoint, known_hosts, "vmctl-test")


@contextlib.contextmanager
def mux_master(
    sshd: Sshd, workdir: Path, logged: list[str] | None = None, patience: float = 120
) -> Iterator[sshmux.Master]:
    """A running OpenSSH multiplexing master logged in to `sshd` (what it logs in `logged`),
    stopped after."""
    logged = [] if logged is None else logged
    mux = sshmux.Master(openssh_to(sshd, workdir), workdir, logged.append)
    try:
        mux.start()
        deadline = time.monotonic() + patience  # a loaded 2-core machine takes its time
        while not mux.ready:
            assert time.monotonic() < deadline, f"the master did not start: {logged}"
            time.sleep(0.05)
        yield mux
    finally:
        mux.stop()
