"""vmctl.ssh against a real OpenSSH server on loopback: pinned host keys, commands, SFTP and
the unix-socket channel the host agent forwards docker.sock through."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import pytest
from sshkit import Sshd

from vmctl import keys
from vmctl.errors import VmctlError
from vmctl.ssh import Guest, SshUnavailable, wait_for


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
