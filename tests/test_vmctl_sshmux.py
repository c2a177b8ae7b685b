"""Published ports carried by OpenSSH's multiplexing master (vmctl/sshmux.py), against a real
sshd on loopback: a client socket handed over is carried both ways and let go when its
forward ends, an address nothing listens on is refused with the socket still ours, the
control socket is the user's alone, and no master outlives its owner, even one killed."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sshkit import Sshd, free_port, mux_master, openssh_to

from vmctl import sshmux

pytestmark = pytest.mark.skipif(not sshmux.possible(), reason="OpenSSH's ssh is not installed")
PATIENCE = 120  # s: a loaded 2-core machine takes its time to log in


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def sshd(tmp_path):
    server = Sshd(tmp_path / "sshd")
    yield server
    server.stop()


@pytest.fixture
def master(sshd, tmp_path):
    with mux_master(sshd, tmp_path) as mux:
        yield mux


def _server(answer) -> int:
    """A TCP server on loopback answering one connection with `answer(sock)`."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                answer(conn)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def _accepted_pair() -> tuple[socket.socket, socket.socket]:
    """(the user's client, the host agent's accepted end of it)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=PATIENCE)
        accepted, _ = listener.accept()
    return client, accepted


def _shout(conn: socket.socket) -> None:
    conn.sendall(b"hello\n")
    line = conn.makefile("rb").readline()
    conn.sendall(line.upper())


def test_a_client_is_carried_both_ways_and_let_go_when_its_forward_ends(master):
    port = _server(_shout)
    client, accepted = _accepted_pair()
    with client, accepted:
        control = master.forward(accepted, "127.0.0.1", port)
        accepted.close()  # the master holds the socket now; ours is not needed
        with control:
            assert client.makefile("rb").readline() == b"hello\n"
            client.sendall(b"carried\n")
            assert b"".join(iter(lambda: client.recv(100), b"")) == b"CARRIED\n"
            control.settimeout(PATIENCE)
            assert control.recv(100) == b""  # the forward ended: the master let us go


def test_an_address_nothing_listens_on_is_refused_and_the_client_stays_ours(master):
    client, accepted = _accepted_pair()
    with client, accepted:
        with pytest.raises(sshmux.Refused, match=r"refused a connection to 127\.0\.0\.1:"):
            master.forward(accepted, "127.0.0.1", free_port())
        accepted.sendall(b"still ours\n")  # another way may carry it
        assert client.recv(100) == b"still ours\n"


def test_the_control_socket_is_the_users_alone_and_stop_leaves_nothing(master):
    assert stat.S_IMODE(master.control.stat().st_mode) == 0o600
    process = master._process
    master.stop()
    assert process.poll() is not None and not master.control.exists()
    with pytest.raises(sshmux.Unavailable):
        master.forward(socket.socket(), "127.0.0.1", 1)
    master.stop()  # a second stop is harmless


def test_a_socket_path_too_long_for_unix_sockets_goes_in_a_folder_of_its_own(sshd, tmp_path):
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    with mux_master(sshd, deep) as mux:  # started, and answering at that shorter path
        assert len(os.fsencode(mux.control)) <= sshmux.SUN_PATH_MAX
    assert not mux.control.parent.exists()


OWNER = """
import sys, time
from pathlib import Path
from vmctl import sshmux
mux = sshmux.Master(sys.argv[2:], Path(sys.argv[1]), lambda line: None)
mux.start()
while not mux.ready:
    time.sleep(0.05)
print(mux._process.pid, flush=True)
time.sleep(3600)
"""


def test_a_master_left_by_a_killed_owner_is_ended_by_the_next(sshd, tmp_path):
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path), *openssh_to(sshd, tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        orphan = int(owner.stdout.readline())
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert _alive(orphan)
        logged: list[str] = []
        with mux_master(sshd, tmp_path, logged) as mux:
            _until(lambda: not _alive(orphan), "the orphan outlived the next master's start")
            assert mux.ready and "ended the OpenSSH master a killed host agent left" in logged
    finally:
        owner.kill()
        owner.wait()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
