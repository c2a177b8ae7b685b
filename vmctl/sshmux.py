"""Published ports carried by OpenSSH's client instead of paramiko, where it can multiplex.

Through paramiko, each small request through a published port cost this process 0.28 ms of
CPU, against 0.11 ms for OpenSSH's `ssh -L` (bench/ports.py, 2,000 GETs on 8 connections);
on a 2-core machine that CPU is taken from the emulated guest, and the GETs ran at 0.9x
`ssh -L`. So where OpenSSH can multiplex (not on Windows), the host agent keeps an `ssh` as
a ControlMaster to the guest and hands it each accepted client socket, with the multiplexing
protocol's stdio forward (OpenSSH's PROTOCOL.mux, MUX_C_NEW_STDIO_FWD: the socket passed
twice, as stdin and stdout, over the control socket). OpenSSH's C then moves the bytes
between the client and its `direct-tcpip` channel, as `ssh -L` does, and this process only
holds the control connection, which the master closes when the forward ends.

A master ends with the VM (its connection drops), when the host agent stops it, or, if the
host agent was killed, when the next one starts: that asks the master found at the control
socket to end before starting its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vmctl.errors import VmctlError

HELLO = 0x00000001
ALIVE_CHECK = 0x10000004
TERMINATE = 0x10000005
NEW_STDIO_FWD = 0x10000008
S_PERMISSION_DENIED = 0x80000002
S_FAILURE = 0x80000003
S_ALIVE = 0x80000005
S_SESSION_OPENED = 0x80000006
VERSION = 4
PATIENCE = 30.0  # s for the master's login, and for a forward's channel to open
RETRY = 3.0  # s between starts of a master that ended (a VM restarting)
SUN_PATH_MAX = 100  # bytes of a unix socket path everywhere (macOS allows 104)


class Unavailable(VmctlError):
    """No master answers (starting, gone, or none possible here): carry another way."""


class Refused(VmctlError):
    """The guest's sshd could not connect to the address (nothing listens there)."""


def possible() -> bool:
    """OpenSSH multiplexes over unix sockets, which Windows' port does not."""
    return sys.platform != "win32" and shutil.which("ssh") is not None


class Master:
    """An OpenSSH ControlMaster to the guest: started by `start()`, again after it ends."""

    def __init__(self, options: list[str], folder: Path, log: Callable[[str], None]) -> None:
        """`options`: `ssh`'s arguments for the guest (key, port, pinned host key) ending
        with user@host; the control socket goes in `folder` when its path fits."""
        self.options = options
        self.log = log
        self._own_dir: Path | None = None
        self.log_path = folder / "ssh-mux.log"  # the master's own words, when it fails
        control = folder / "ssh-mux.sock"
        if len(os.fsencode(control)) > SUN_PATH_MAX:
            self._own_dir = Path(tempfile.mkdtemp(prefix="vmctl-mux-"))
            control = self._own_dir / "ssh-mux.sock"
        self.control = control
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._started = -RETRY

    def start(self) -> None:
        """Start a master in the background unless one runs or was started RETRY s ago."""
        with self._lock:
            running = self._process is not None and self._process.poll() is None
            if running or time.monotonic() - self._started < RETRY:
                return
            self._started = time.monotonic()
            self._ready = False
            self._end_orphan()
            self.control.unlink(missing_ok=True)  # a dead master's, or ssh would not listen
            argv = [
                "ssh", "-F", "none", "-N",
                "-o", "ControlMaster=yes", "-o", f"ControlPath={self.control}",
                "-o", "ControlPersist=no", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3",
                # as paramiko's transport (ssh.GuestTransport): GCM costs the guest less
                "-o", "Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
                "chacha20-poly1305@openssh.com",
                *self.options,
            ]  # fmt: skip
            with open(self.log_path, "wb") as errors:
                self._process = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors
                )
            process = self._process
        threading.Thread(target=self._until_ready, args=(process,), daemon=True).start()

    def _end_orphan(self) -> None:
        """Ask a master left by a host agent that was killed to end (a stale socket, or
        none, answers nothing)."""
        with contextlib.suppress(OSError, Unavailable), self._connect(patience=2) as control:
            control.sendall(_packet(TERMINATE, _u32(0)))
            self.log("ended the OpenSSH master a killed host agent left")
            _read_packet(control)  # MUX_S_OK, or it has gone already

    def _until_ready(self, process: subprocess.Popen[bytes]) -> None:
        """Ready once the control socket answers; said why if the master ends first."""
        while process.poll() is None:
            with contextlib.suppress(OSError, Unavailable), self._connect():
                with self._lock:
                    self._ready = process is self._process
                self.log(f"published ports go through OpenSSH's master (pid {process.pid})")
                return
            time.sleep(0.1)
        said = self.log_path.read_text(errors="replace").strip() if self.log_path.exists() else ""
        self.log(f"OpenSSH's multiplexing master ended: {said or f'status {process.returncode}'}")

    @property
    def ready(self) -> bool:
        with self._lock:
            return self._ready and self._process is not None and self._process.poll() is None

    def forward(self, client: socket.socket, host: str, port: int) -> socket.socket:
        """Hand `client` to the master, for a forward to host:port through the guest's sshd.
        Returns the control connection, which the master closes when the forward ends:
        the caller holds it until then (closing it ends the forward)."""
        if not self.ready:
            self.start()
            raise Unavailable("OpenSSH's multiplexing master is not running")
        try:
            control = self._connect()
        except OSError as e:
            self.start()  # it ended (the VM restarted): the next connection may use it
            raise Unavailable(f"OpenSSH's multiplexing master does not answer: {e}") from None
        try:
            body = _u32(0) + _string(b"") + _string(host.encode()) + _u32(port)
            control.sendall(_packet(NEW_STDIO_FWD, body))
            for _ in range(2):  # stdin, then stdout: the same socket
                socket.send_fds(control, [b"\0"], [client.fileno()])
            kind, reply = _read_packet(control)
        except (OSError, Unavailable) as e:
            control.close()
            raise Unavailable(f"OpenSSH's multiplexing master failed: {e}") from None
        if kind != S_SESSION_OPENED:
            control.close()
            reason = _reason(reply) if kind in (S_FAILURE, S_PERMISSION_DENIED) else hex(kind)
            raise Refused(f"the VM refused a connection to {host}:{port}: {reason}")
        control.settimeout(None)
        return control

    def _connect(self, patience: float = PATIENCE) -> socket.socket:
        """A control connection that has said hello both ways."""
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            control.settimeout(patience)
            control.connect(str(self.control))
            control.sendall(_packet(HELLO, _u32(VERSION)))
            kind, body = _read_packet(control)
            if kind != HELLO or struct.unpack(">I", body[:4])[0] != VERSION:
                raise Unavailable(f"OpenSSH's master speaks another protocol ({kind:#x})")
        except BaseException:
            control.close()
            raise
        return control

    def stop(self) -> None:
        with self._lock:
            process, self._process, self._ready = self._process, None, False
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.control.unlink(missing_ok=True)
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


def _string(data: bytes) -> bytes:
    return _u32(len(data)) + data


def _packet(kind: int, body: bytes) -> bytes:
    return _u32(4 + len(body)) + _u32(kind) + body


def _read_packet(control: socket.socket) -> tuple[int, bytes]:
    (length,) = struct.unpack(">I", _read_exactly(control, 4))
    data = _read_exactly(control, length)
    return struct.unpack(">I", data[:4])[0], data[4:]


def _read_exactly(control: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = control.recv(size - len(data))
        if not chunk:
            raise Unavailable("OpenSSH's multiplexing master closed the connection")
        data += chunk
    return data


def _reason(reply: bytes) -> str:
    """The reason string after a failure's request id."""
    (length,) = struct.unpack(">I", reply[4:8])
    return reply[8 : 8 + length].decode(errors="replace")
