"""SSH into the guest with paramiko: a pinned host key, commands, SFTP, and unix-socket channels.

The VM's host key is made on the host before first boot and handed to the guest by cloud-init,
so the client knows it before it ever connects: any other key is refused (RejectPolicy), never
learnt on first use.

paramiko opens TCP forwards (`direct-tcpip`) but not OpenSSH's unix-socket forwards
(`direct-streamlocal@openssh.com`, what `ssh -L local.sock:/remote.sock` uses). The engine only
listens on a unix socket (0660, group docker), so `GuestTransport` adds that one channel type:
the same channel-open message with the socket path appended as OpenSSH's PROTOCOL file says.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.common import cMSG_CHANNEL_OPEN

from vmctl import atomic
from vmctl.errors import VmctlError

STREAMLOCAL = "direct-streamlocal@openssh.com"
POLL_INTERVAL = 3.0  # s between SSH tries while a guest boots
FIRST_PATIENCE = 2.0  # s the first try waits for sshd's banner; doubled after each silent one
HINTED_PATIENCE = 8.0  # s, at least, once the console says sshd started
BANNER_SLICE = 0.5  # s between looks at the console while a connection is silent

# paramiko logs every refused handshake with a traceback (while a VM boots, slirp accepts and
# resets connections until sshd listens); vmctl reports SSH failures itself, in words.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


class GuestTransport(paramiko.Transport):
    """A paramiko Transport that can also open a channel to a unix socket in the guest."""

    _pending = threading.local()  # the socket path a thread is opening, read by the send hook
    # AES-GCM first: it authenticates as it encrypts, where paramiko's default (aes128-ctr)
    # makes the guest's sshd also hash each packet (HMAC-SHA-256), under emulation the
    # larger cost of every byte carried (OpenSSH's own client prefers chacha20-poly1305,
    # which paramiko lacks).
    _preferred_ciphers = (
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        *(c for c in paramiko.Transport._preferred_ciphers if "gcm" not in c),
    )

    def open_unix_socket(self, path: str, timeout: float | None = 10) -> paramiko.Channel:
        self._pending.path = path
        try:
            return self.open_channel(STREAMLOCAL, timeout=timeout)
        finally:
            self._pending.path = None

    def _send_user_message(self, data) -> None:
        path = getattr(self._pending, "path", None)
        if path is not None and isinstance(data, paramiko.Message):
            raw = data.asbytes()
            if raw[:1] == cMSG_CHANNEL_OPEN and STREAMLOCAL.encode() in raw[:64]:
                data.add_string(path)
                data.add_string("")  # reserved
                data.add_int(0)  # reserved
                self._pending.path = None
        super()._send_user_message(data)


@dataclass(frozen=True)
class Endpoint:
    """Where and how to log in: a loopback port forwarded to the guest's sshd."""

    host: str
    port: int
    user: str
    key: Path  # private key, 0600
    host_key: str  # the guest's pinned public host key: "ssh-ed25519 AAAA..."

    def known_hosts_line(self, alias: str) -> str:
        kind, blob = self.host_key.split()[:2]
        return f"{alias} {kind} {blob}\n"


@dataclass(frozen=True)
class Result:
    status: int
    stdout: str
    stderr: str


class Guest:
    """One SSH connection to the guest; reconnect by making a new one."""

    def __init__(
        self, endpoint: Endpoint, timeout: float = 10, sock: socket.socket | None = None
    ) -> None:
        self.endpoint = endpoint
        self.client = paramiko.SSHClient()
        kind, blob = endpoint.host_key.split()[:2]
        key = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
        self.client.get_host_keys().add(_host_id(endpoint), kind, key)
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            self.client.connect(
                endpoint.host,
                endpoint.port,
                username=endpoint.user,
                key_filename=str(endpoint.key),
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                look_for_keys=False,
                allow_agent=False,
                transport_factory=GuestTransport,
                sock=sock,
            )
        except paramiko.BadHostKeyException as e:
            self.client.close()
            raise VmctlError(
                f"the VM's SSH host key does not match the pinned one ({e.key.get_name()} "
                f"{e.key.get_base64()[:16]}...): refusing to connect; something else answers "
                f"on port {endpoint.port}, or the VM was re-created outside vmctl"
            ) from None
        except (OSError, paramiko.SSHException, EOFError) as e:
            self.client.close()
            raise SshUnavailable(f"SSH to {endpoint.host}:{endpoint.port}: {e}") from None
        transport = self.client.get_transport()
        assert isinstance(transport, GuestTransport)
        transport.set_keepalive(15)
        # Every use of the connection is a request and its answer (SFTP, the Engine API,
        # attach): with Nagle on, an answer sent while the previous one is unacknowledged
        # waits for the peer's delayed ACK, 40 ms (a file sshfs made through the sftp share
        # took 86 ms, not 1.5, measured on loopback); OpenSSH sets it for interactive sessions.
        with contextlib.suppress(OSError):
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport = transport

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    @property
    def alive(self) -> bool:
        return self.transport.is_active()

    def run(
        self,
        command: Sequence[str] | str,
        *,
        timeout: float = 60,
        check: bool = True,
        stdin: bytes | None = None,
    ) -> Result:
        """Run a command (a list is quoted for the guest's shell); raise on failure if `check`."""
        line = command if isinstance(command, str) else shlex.join(command)
        channel = self.transport.open_session(timeout=timeout)
        try:
            channel.settimeout(timeout)
            channel.exec_command(line)
            if stdin is not None:
                channel.sendall(stdin)
            channel.shutdown_write()
            out, err = _drain(channel, timeout)
            status = channel.recv_exit_status()
        except TimeoutError:
            raise VmctlError(f"`{line}` in the VM took longer than {timeout:.0f} s") from None
        finally:
            channel.close()
        result = Result(status, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and status != 0:
            detail = (result.stderr or result.stdout).strip()[-800:]
            raise VmctlError(f"`{line}` failed in the VM (exit {status}): {detail}")
        return result

    def put(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        """Write a file in the login user's reach over SFTP (temp name, then rename)."""
        sftp = self.client.open_sftp()
        try:
            tmp = f"{remote}.tmp"
            with sftp.open(tmp, "wb") as f:
                f.set_pipelined(True)
                f.write(data)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, remote)
        finally:
            sftp.close()

    def open_unix_socket(self, path: str) -> paramiko.Channel:
        try:
            return self.transport.open_unix_socket(path)
        except paramiko.ChannelException as e:
            raise VmctlError(f"the VM refused a connection to {path}: {e.text}") from None

    def open_tcp(self, address: str, port: int) -> paramiko.Channel:
        """A TCP connection made by the guest's sshd (`direct-tcpip`, what `ssh -L` uses)."""
        try:
            return self.transport.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0))
        except paramiko.ChannelException as e:
            raise VmctlError(f"the VM refused a connection to {address}:{port}: {e.text}") from None


def pinned_known_hosts(endpoint: Endpoint, path: Path, alias: str) -> Path:
    """A known_hosts file pinning the guest's host key under `alias`, for OpenSSH's `ssh`."""
    line = endpoint.known_hosts_line(alias)
    if not path.exists() or path.read_text() != line:
        atomic.write_text(path, line)
    return path


def openssh_options(endpoint: Endpoint, known_hosts: Path, alias: str) -> list[str]:
    """OpenSSH's `ssh` arguments to log in to the guest with its pinned host key (the
    destination last)."""
    return [
        "-i", str(endpoint.key), "-p", str(endpoint.port),
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", f"HostKeyAlias={alias}",
        "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
        f"{endpoint.user}@{endpoint.host}",
    ]  # fmt: skip


class SshUnavailable(VmctlError):
    """sshd did not answer (yet): booting, or the VM is gone."""


def wait_for(
    endpoint: Endpoint,
    deadline: float,
    alive: Callable[[], bool] = lambda: True,
    ready_hint: Callable[[], bool] | None = None,
) -> Guest:
    """Connect, retrying until `deadline` (time.monotonic) while `alive()` says the VM runs.

    Every try makes the guest's sshd fork and re-exec, which an emulated guest that is still
    booting feels: so it tries every few seconds, and at once when `ready_hint()` (the console
    saying sshd started) says it is worth it. A try that QEMU accepted is kept until sshd's
    banner or a hang-up, twice as long as the last silent one: a busy guest on a loaded host
    can take longer than any fixed wait to answer, and hanging up only makes it start over."""
    tries = _Tries(ready_hint)
    while time.monotonic() < deadline:
        if not alive():
            raise VmctlError("the VM stopped while waiting for SSH")
        if tries.due():
            guest = _try(endpoint, deadline, tries)
            if guest is not None:
                return guest
        time.sleep(0.2)
    raise SshUnavailable("SSH did not answer" + (f": {tries.last}" if tries.last else ""))


@dataclass
class _Tries:
    """When to try next, how long to wait for a banner, and why the last try failed."""

    ready_hint: Callable[[], bool] | None
    patience: float = FIRST_PATIENCE
    next_at: float = 0.0
    hinted: bool = False
    last: str = ""

    def due(self) -> bool:
        return self.hint_arrived() or time.monotonic() >= self.next_at

    def hint_arrived(self) -> bool:
        """True once: when the console first says sshd started. From then on each try waits
        at least HINTED_PATIENCE: sshd's first answers in a booting emulated guest are slow."""
        if self.hinted or self.ready_hint is None or not self.ready_hint():
            return False
        self.hinted = True
        self.patience = max(self.patience, HINTED_PATIENCE)
        return True


def _try(endpoint: Endpoint, deadline: float, tries: _Tries) -> Guest | None:
    """One connection: the guest once sshd answered on it and let us in, else None."""
    began = time.monotonic()
    tries.next_at = began + POLL_INTERVAL
    wait = max(1.0, min(tries.patience, deadline - began))
    sock, why = _sshd(endpoint.host, endpoint.port, wait, tries.hint_arrived)
    if sock is None:
        tries.last = why
        if why.startswith("no banner"):
            tries.patience *= 2
        elif why.startswith("the console says"):
            tries.next_at = 0.0  # a fresh connection now, not one opened before sshd listened
        return None
    try:  # on the connection that showed the banner: each one costs the guest
        return Guest(endpoint, timeout=max(1.0, deadline - time.monotonic()), sock=sock)
    except SshUnavailable as e:
        tries.last = str(e)
        return None


def _host_id(endpoint: Endpoint) -> str:
    return endpoint.host if endpoint.port == 22 else f"[{endpoint.host}]:{endpoint.port}"


def _sshd(
    host: str, port: int, wait: float, give_up: Callable[[], bool] = lambda: False
) -> tuple[socket.socket | None, str]:
    """A connection on which sshd itself answered (its banner, peeked at, not consumed), or
    None and why: QEMU's user networking accepts every connection to a forwarded port at once,
    even while nothing listens in the guest yet (it hangs up once the guest refuses, and stays
    silent while the guest's network is not up). `give_up()` ends a silent wait early."""
    try:
        s = socket.create_connection((host, port), timeout=wait)
    except OSError as e:
        return None, f"{host}:{port} refused the connection ({e})"
    first = _peek_banner(s, wait, give_up)
    if first == b"SSH-":
        s.settimeout(None)
        return s, ""
    s.close()
    if isinstance(first, str):
        return None, first
    if first:
        return None, f"what answers on {host}:{port} is not sshd (it sent {first!r})"
    return None, "the guest hung up before sshd's banner (nothing listens on port 22 yet)"


def _peek_banner(s: socket.socket, wait: float, give_up: Callable[[], bool]) -> bytes | str:
    """The first 4 bytes sent on `s` (peeked), or why none came within `wait` s."""
    until = time.monotonic() + wait
    s.settimeout(BANNER_SLICE)
    while True:
        try:
            return s.recv(4, socket.MSG_PEEK)
        except TimeoutError:
            if time.monotonic() >= until:
                return f"no banner within {wait:.0f} s on a connection QEMU accepted"
            if give_up():
                return "the console says sshd started: trying a fresh connection"
        except OSError as e:
            return f"the guest hung up before sshd's banner ({e})"


def _drain(channel: paramiko.Channel, timeout: float) -> tuple[bytes, bytes]:
    """stdout and stderr until the channel's EOF: sshd may send the exit status before the
    last of the command's stderr (it drains the pipes after the child has exited), so the
    status alone does not say that all the output is in."""
    out, err = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    while True:
        # EOF is read before the buffers: paramiko files the last data before it sets EOF, so
        # buffers found empty after EOF was seen are empty for good (checked the other way round,
        # the last line could arrive with EOF between the two looks and be dropped).
        ended = channel.eof_received or channel.closed
        if channel.recv_ready():
            out += channel.recv(65536)
        elif channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
        elif ended:
            return bytes(out), bytes(err)
        else:
            if time.monotonic() > deadline:
                raise TimeoutError
            channel.status_event.wait(0.05)


def interactive(guest: Guest) -> int:
    """A login shell on a pty, for hosts without an `ssh` command (paramiko only)."""
    import select
    import shutil as _shutil
    import sys

    columns, lines = _shutil.get_terminal_size()
    channel = guest.transport.open_session()
    channel.get_pty(term=os.environ.get("TERM", "xterm"), width=columns, height=lines)
    channel.invoke_shell()
    if sys.platform == "win32" or not sys.stdin.isatty():
        threading.Thread(target=_feed_lines, args=(channel,), daemon=True).start()
        while data := channel.recv(65536):
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        return channel.recv_exit_status()
    import termios
    import tty

    saved = termios.tcgetattr(sys.stdin)
    try:
        tty.setraw(sys.stdin.fileno())
        while True:
            ready, _, _ = select.select([channel, sys.stdin], [], [])
            if channel in ready:
                data = channel.recv(65536)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if sys.stdin in ready:
                data = os.read(sys.stdin.fileno(), 4096)
                if not data:
                    break
                channel.sendall(data)
    finally:
        termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
    return channel.recv_exit_status()


def _feed_lines(channel: paramiko.Channel) -> None:
    import sys

    for line in sys.stdin:
        channel.sendall(line.encode())
    channel.shutdown_write()
