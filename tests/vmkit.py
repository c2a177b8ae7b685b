"""Real parts for VM tests: a loopback file server with Range support (the download path's
peer), the offline-built base image cached across runs, and a bare qemu-system-x86_64 guest
under TCG reached over SSH with its host key pinned.

Nothing here is faked: the server speaks HTTP/1.1 over a socket, the image is the one
`vmctl.image.build()` makes, and the guest is a full Debian boot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.server
import io
import os
import re
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from vmctl import cloudinit, disk, image, keys

CACHE = Path(os.environ.get("VMCTL_TEST_CACHE", "/var/cache/vmctl-test"))

# --------------------------------------------------------------------------- file server


@dataclass
class ServerLog:
    """What the server was asked and sent, for tests to assert on."""

    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    sent: int = 0  # body bytes written


class FileServer:
    """Serves the files of `root` on 127.0.0.1 (HTTP/1.1, threaded).

    honor_range=False answers every GET with the whole file (200), as some servers do.
    cut_after=N sends only N body bytes of the next response, then drops the connection.
    """

    def __init__(self, root: Path, honor_range: bool = True) -> None:
        self.root, self.honor_range, self.cut_after = root, honor_range, None
        self.log = ServerLog()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/{name}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server._get(self)

        return Handler

    def _get(self, req: http.server.BaseHTTPRequestHandler) -> None:
        wanted = req.headers.get("Range")
        self.log.requests.append((req.path, wanted))
        path = self.root / req.path.lstrip("/")
        if not path.is_file():
            req.send_error(404)
            return
        data = path.read_bytes()
        match = re.fullmatch(r"bytes=(\d+)-", wanted or "") if self.honor_range else None
        start = int(match.group(1)) if match else 0
        if start >= len(data) and match:
            req.send_response(416)
            req.send_header("Content-Range", f"bytes */{len(data)}")
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        req.send_response(206 if match else 200)
        if match:
            req.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        req.send_header("Content-Length", str(len(data) - start))
        req.end_headers()
        body = data[start:]
        if self.cut_after is not None:
            body, self.cut_after = body[: self.cut_after], None
            req.close_connection = True
        req.wfile.write(body)
        self.log.sent += len(body)


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up mid-body (the resume tests) is expected, not news


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- the built image


def built_image() -> image.BaseImage:
    """The offline base image, built once and shared by every test run on this machine
    (flock'ed: parallel callers wait for one build). Takes a few minutes the first time."""
    images = CACHE / "images"
    images.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return image.build(images)


# --------------------------------------------------------------------------- processes


def wait_until_gone(pid: int, timeout: float = 120) -> None:
    """Until process `pid` (not ours to reap) has ended: what a SIGKILL sent to it takes,
    which on a loaded host is not instant (a QEMU frees its guest's memory first)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    assert ready, f"process {pid} still runs {timeout:.0f} s after it was killed"


# --------------------------------------------------------------------------- a booted guest


@dataclass
class Guest:
    """A running qemu-system-x86_64 with SSH forwarded from 127.0.0.1:port."""

    proc: subprocess.Popen
    port: int
    serial: Path
    user_key: keys.KeyPair
    host_key: keys.KeyPair
    started: float  # time.monotonic() when qemu was launched

    def connect(self, timeout: float) -> paramiko.SSHClient:
        """SSH as the seed's user once sshd answers, trusting only the seed's host key."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"qemu exited {self.proc.returncode}; see {self.serial}")
            try:
                return self._connect_once()
            except (OSError, paramiko.SSHException) as e:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"no SSH after {timeout:.0f} s ({e}); see {self.serial}"
                    ) from e
                time.sleep(1)

    def _connect_once(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        kind, blob = self.host_key.public_openssh.split()[:2]
        key = paramiko.Ed25519Key(data=base64.b64decode(blob))
        client.get_host_keys().add(f"[127.0.0.1]:{self.port}", kind, key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(self.user_key.private_openssh))
        client.connect(
            "127.0.0.1",
            self.port,
            username=cloudinit.USER,
            pkey=pkey,
            allow_agent=False,
            look_for_keys=False,
            timeout=10,
            banner_timeout=20,
            auth_timeout=20,
        )
        return client


def run(client: paramiko.SSHClient, command: str, timeout: float = 120) -> str:
    """Run `command` in the guest; its stdout, or AssertionError with stderr when it fails."""
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out, err = stdout.read().decode(), stderr.read().decode()
    status = stdout.channel.recv_exit_status()
    if status != 0:
        raise AssertionError(f"{command!r} exited {status}: {err.strip()}")
    return out


def qemu_argv(
    base: image.BaseImage, overlay: Path, seed: Path, serial: Path, port: int, memory_mib: int
) -> list[str]:
    """A bare TCG guest: direct kernel boot, virtio disk and seed, user networking."""
    assert base.kernel and base.initrd and base.cmdline, "the built image ships a kernel"
    return [
        "qemu-system-x86_64",
        "-accel", "tcg", "-m", str(memory_mib), "-smp", "2",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-kernel", str(base.kernel), "-initrd", str(base.initrd), "-append", base.cmdline,
        "-drive", f"file={overlay},if=virtio,format=qcow2,discard=unmap",
        "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        "-device", "virtio-rng-pci",
        "-serial", f"file:{serial}",
    ]  # fmt: skip


@contextlib.contextmanager
def booted(
    base: image.BaseImage, workdir: Path, disk_gib: int = 4, memory_mib: int = 1024
) -> Iterator[Guest]:
    """Boot `base` on a fresh overlay with a fresh seed; qemu is killed on the way out."""
    user_key, host_key = keys.generate("vmctl-test"), keys.generate("vmctl-test-guest")
    seed = cloudinit.Seed(
        instance_id=f"vmctl-test-{uuid.uuid4().hex[:8]}",
        hostname="vmctl-imgtest",
        authorized_key=user_key.public_openssh,
        host_key_private=host_key.private_openssh,
        host_key_public=host_key.public_openssh,
        daemon_json={},
    )
    seed_iso = cloudinit.write_seed_iso(seed, workdir / "seed.iso")
    overlay = disk.create_overlay(base, workdir / "disk.qcow2", disk_gib)
    port, serial = free_port(), workdir / "serial.log"
    argv = qemu_argv(base, overlay, seed_iso, serial, port, memory_mib)
    with open(workdir / "qemu.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        yield Guest(proc, port, serial, user_key, host_key, time.monotonic())
    finally:
        proc.kill()
        proc.wait()
