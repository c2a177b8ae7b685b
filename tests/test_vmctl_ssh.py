"""vmctl.ssh against a real OpenSSH server on loopback: pinned host keys, commands, SFTP and
the unix-socket channel the host agent forwards docker.sock through."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from sshkit import Sshd

from vmctl import keys
from vmctl.errors import VmctlError
from vmctl.ssh import FIRST_PATIENCE, Endpoint, Guest, SshUnavailable, _sshd, _Tries, wait_for


@pytest.fixture
def sshd(tmp_path):
    server = Sshd(tmp_path / "sshd")
    yield server
    server.stop()


def test_commands_status_and_output(sshd):
    with Guest(sshd.endpoint) as guest:
        result = guest.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
        assert (result.status, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert guest.run(["cat"], stdin=b"through stdin").stdout == "through stdin"
        with pytest.raises(VmctlError, match=r"failed in the VM \(exit 1\): nope"):
            guest.run(["sh", "-c", "echo nope >&2; exit 1"])


def test_the_connection_sends_each_answer_at_once(sshd):
    """Nagle off: with it on, each SFTP answer sent while the one before was unacknowledged
    waited for the peer's delayed ACK (40 ms), and a file made through the sftp share took
    ~45 ms more (bench/README.md)."""
    with Guest(sshd.endpoint) as guest:
        sock = guest.transport.sock
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_output_written_after_the_exit_status_is_not_lost(sshd):
    """sshd sends the exit status when the command exits, and its output as long as the pipes
    are open: reading until EOF, not until the status, gets all of it (the stderr of a quick
    command was lost under load)."""
    with Guest(sshd.endpoint) as guest:
        command = "echo out; (sleep 1; echo late >&2; echo later) & exit 3"
        result = guest.run(["sh", "-c", command], check=False)
        assert (result.status, result.stdout, result.stderr) == (3, "out\nlater\n", "late\n")


class _LastLineWithEof:
    """A channel whose last line and EOF land together, just after the drain has found the
    buffers empty: the interleaving that lost "later" on a loaded CI machine, made certain."""

    def __init__(self) -> None:
        self.pending = b""
        self.eof_received = False
        self.closed = False
        self.status_event = threading.Event()

    def recv_ready(self) -> bool:
        return bool(self.pending)

    def recv_stderr_ready(self) -> bool:
        if not self.eof_received:  # the transport thread files the data, then the EOF
            self.pending, self.eof_received = b"later\n", True
        return False

    def recv(self, size: int) -> bytes:
        data, self.pending = self.pending, b""
        return data


def test_output_arriving_with_the_eof_is_not_lost():
    from vmctl.ssh import _drain

    assert _drain(_LastLineWithEof(), timeout=5) == (b"later\n", b"")


def test_a_host_key_other_than_the_pinned_one_is_refused(sshd, tmp_path):
    impostor = keys.generate("impostor").public_openssh
    with pytest.raises(
        VmctlError, match=r"does not match the pinned one \(ssh-ed25519 .*\): refusing to connect"
    ):
        Guest(dataclasses.replace(sshd.endpoint, host_key=impostor))


def test_sftp_put_is_atomic_and_sets_the_mode(sshd, tmp_path):
    target = tmp_path / "deployed"
    with Guest(sshd.endpoint) as guest:
        guest.put(b"payload", str(target), mode=0o755)
    assert target.read_bytes() == b"payload"
    assert target.stat().st_mode & 0o777 == 0o755
    assert not target.with_name("deployed.tmp").exists()


def test_a_channel_to_a_unix_socket_in_the_guest(sshd, tmp_path):
    path = tmp_path / "engine.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()

    def echo_upper():
        for _ in range(2):
            conn, _ = server.accept()
            with conn:
                conn.sendall(conn.recv(100).upper())

    threading.Thread(target=echo_upper, daemon=True).start()
    with Guest(sshd.endpoint) as guest:
        for word in (b"ping", b"twice"):
            channel = guest.open_unix_socket(str(path))
            channel.sendall(word)
            assert channel.recv(100) == word.upper()
            channel.close()
        with pytest.raises(VmctlError, match=r"refused a connection to /nonexistent\.sock"):
            guest.open_unix_socket("/nonexistent.sock")
    server.close()


def test_waiting_for_ssh_gives_up_with_a_reason(sshd):
    sshd.stop()
    start = time.monotonic()
    with pytest.raises(SshUnavailable, match="SSH did not answer"):
        wait_for(sshd.endpoint, time.monotonic() + 1.5)
    assert time.monotonic() - start < 10
    with pytest.raises(VmctlError, match="the VM stopped while waiting for SSH"):
        wait_for(sshd.endpoint, time.monotonic() + 30, alive=lambda: False)


class SlowBanner:
    """A loopback TCP relay to `target` that holds back what the server says first for
    `delay` s on each connection: a guest whose sshd is slow to answer (busy booting, on a
    loaded host), behind QEMU's forward that accepts at once."""

    def __init__(self, target: int, delay: float) -> None:
        self.target, self.delay, self.accepted = target, delay, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(upstream, client, self.delay), daemon=True
            ).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, hold: float) -> None:
        time.sleep(hold)
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


def test_waiting_for_ssh_outlasts_a_banner_slower_than_the_first_tries(sshd):
    """Each try that sees no banner waits twice as long as the last, so an sshd that always
    answers late is reached; hanging up after a fixed wait would never reach it."""
    relay = SlowBanner(sshd.port, delay=FIRST_PATIENCE * 2.5)
    try:
        endpoint = dataclasses.replace(sshd.endpoint, port=relay.port)
        with wait_for(endpoint, time.monotonic() + 300) as guest:
            assert guest.run(["echo", "in"]).stdout == "in\n"
        assert relay.accepted >= 2  # the first, shorter tries gave up on it
    finally:
        relay.close()


def test_a_forward_that_accepts_and_never_answers_is_named_in_the_reason():
    """What QEMU's forward does while the guest's network is down: accept, then silence."""
    server = socket.create_server(("127.0.0.1", 0))
    endpoint = Endpoint("127.0.0.1", server.getsockname()[1], "root", Path("/nonexistent"), "x y")
    try:
        with pytest.raises(SshUnavailable, match=r"no banner within \d+ s on a connection QEMU"):
            wait_for(endpoint, time.monotonic() + FIRST_PATIENCE + 1)
    finally:
        server.close()


def test_the_console_saying_sshd_started_makes_a_fresh_try_at_once(sshd):
    """A connection opened while the guest's network was down can stay silent long after
    sshd listens (QEMU's SYN retries back off): the hint abandons it for a new one."""
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    hint = threading.Event()
    tries = _Tries(hint.is_set, patience=600)
    began = threading.Timer(0.5, hint.set)
    began.start()
    sock, why = _sshd("127.0.0.1", port, tries.patience, tries.hint_arrived)
    silent.close()
    assert sock is None and why.startswith("the console says sshd started"), why
    assert tries.hinted


class _Running:
    """The hypervisor's answer while the guest is slow: still running."""

    def is_running(self) -> bool:
        return True


def test_waiting_for_cloud_init_outlasts_a_guest_slower_than_one_look(sshd, tmp_path, monkeypatch):
    """Under emulation on a loaded host one SSH command can take longer than a look's own
    minimum while cloud-init keeps the guest busy: the stage's time, not the look's, decides."""
    from sshkit import _freeze_tree

    from vmctl import provision

    disabled = tmp_path / "cloud-init.disabled"
    disabled.touch()  # the look runs on this host: this is the "guest" saying it is done
    monkeypatch.setattr(provision, "CLOUD_INIT_DISABLED", str(disabled))
    monkeypatch.setattr(provision, "LOOK_TIMEOUT", 1.0)
    with Guest(sshd.endpoint) as guest:
        frozen = _freeze_tree(sshd.process.pid)  # the guest stalls, as a starved one does
        thaw = threading.Timer(4.0, lambda: [os.kill(pid, signal.SIGCONT) for pid in frozen])
        thaw.start()
        try:
            state = provision.wait_cloud_init(guest, _Running(), timeout=600)
        finally:
            thaw.join()
    assert state.cloud_init == "disabled"


class _BootingDriver:
    """A guest whose console prints a line at each of its first `lines` looks, then nothing."""

    def __init__(self, console: Path, lines: int) -> None:
        self.console, self.lines = console, lines

    def is_running(self) -> bool:
        if self.lines:
            self.lines -= 1
            with open(self.console, "a") as f:
                f.write("Starting something...\n")
        return True


def test_the_ssh_stage_waits_on_while_the_console_goes_on_and_not_after(tmp_path, monkeypatch):
    from vmctl import paths as vmpaths
    from vmctl import ssh, stages, vm

    monkeypatch.setenv("VMCTL_HOME", str(tmp_path))
    monkeypatch.setitem(stages.TIMEOUTS, "ssh", 2.0)
    paths = vmpaths.vm("booting")
    paths.root.mkdir(parents=True)
    with socket.socket() as s:  # a port nothing listens on: every try is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = ssh.Endpoint("127.0.0.1", port, "root", tmp_path / "key", "ssh-ed25519 AAAA")
    said: list[str] = []
    with pytest.raises(ssh.SshUnavailable):
        vm.wait_for_ssh(paths, endpoint, _BootingDriver(paths.serial_log, 3), None, said.append)
    assert said and all("still booting" in s for s in said)
    assert paths.serial_log.read_text().count("\n") == 3  # it gave up once the console stopped
