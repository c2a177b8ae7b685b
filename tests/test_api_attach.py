"""Attach with the real docker CLI and docker-py against `vmctl-agent serve`: the output comes
from the container's shim as it is written (runtime/taps.py), not from its log: a prompt
without a newline, a `--rm` container whose log rotated and was removed with it, a client
that reads slowly (the container waits, nothing is lost), one that never reads (the exit is
still recorded), `docker start -ai` of an ended container, and attaches that leave or lose
their container before the start."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import docker
import pytest
from agentserver import PATIENCE, ok, serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")

LINES = "for i in $(seq 1 200); do echo line-$i-................................; done"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-attach"), registry) as server:
        assert server.docker("pull", "busybox").returncode == 0
        yield server


@pytest.fixture(scope="module")
def api(agent):
    client = docker.APIClient(base_url=agent.url, version="auto", timeout=PATIENCE)
    yield client
    client.close()


def _attach(api, container, **params) -> socket.socket:
    sock = api.attach_socket(container, params={"stdout": 1, "stderr": 1, "stream": 1, **params})
    sock._sock.settimeout(PATIENCE)
    return sock._sock


def _until(sock: socket.socket, wanted: bytes) -> bytes:
    data = b""
    while wanted not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the attach ended before {wanted!r}: {data!r}"
        data += chunk
    return data


def _until_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(1 << 20):
        data += chunk
    return data


def _demux(data: bytes) -> dict[int, bytes]:
    """Docker's multiplexed frames, by stream, checked whole."""
    out: dict[int, bytes] = {1: b"", 2: b""}
    while data:
        assert len(data) >= 8 and data[1:4] == b"\0\0\0", data[:16]
        size = int.from_bytes(data[4:8], "big")
        out[data[0]] += data[8 : 8 + size]
        assert len(data) >= 8 + size, "a frame cut short"
        data = data[8 + size :]
    return out


def _taps_held(agent) -> int:
    """The agent's unix sockets without a path: the taps (socket pairs, and its ends of
    ctl.sock connections); its clients' connections carry the API socket's path."""
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    unnamed = {f"socket:[{p[6]}]" for p in (line.split() for line in lines) if len(p) == 7}
    fds = Path(f"/proc/{agent.process.pid}/fd")
    held = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            held += os.readlink(fd) in unnamed
    return held


def _taps_let_go(agent) -> bool:
    """No tap held any more (the sessions end on their own threads: waited for)."""
    deadline = time.monotonic() + PATIENCE
    while _taps_held(agent) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _taps_held(agent) == 0


def test_a_terminals_prompt_shows_before_any_newline(api):
    container = api.create_container("busybox", "sh", stdin_open=True, tty=True)
    sock = _attach(api, container, stdin=1)
    api.start(container)
    assert b"/ # " in _until(sock, b"/ # ")  # the shell waits for a line: none sent
    sock.sendall(b"echo $((6*7))\n")
    assert b"42" in _until(sock, b"42\r\n/ # ")
    sock.close()
    api.remove_container(container, force=True)


def test_a_removed_container_whose_log_rotated_gave_its_attach_every_line(agent):
    flags = ("--log-opt", "max-size=2k", "--log-opt", "max-file=2")
    for _ in range(5):  # the log's first files were gone before the attach could read them
        out = ok(agent.docker("run", "--rm", *flags, "busybox", "sh", "-c", LINES))
        assert [int(line.split("-")[1]) for line in out.splitlines()] == list(range(1, 201))


def test_a_client_that_reads_slowly_holds_the_container_back_and_loses_nothing(api):
    command = ["sh", "-c", "head -c 8388608 /dev/zero | tr '\\0' x; echo done >&2"]
    container = api.create_container("busybox", command)
    sock = _attach(api, container)
    api.start(container)
    received = sock.recv(65536)  # the output has begun; now nobody reads for a while
    time.sleep(1)
    # 8 MiB cannot fit in what lies between (the shim's 256 KiB, the sockets' buffers): it
    # waits for the client, however long the machine took to get this far
    assert api.inspect_container(container)["State"]["Running"] is True
    output = _demux(received + _until_eof(sock))
    assert output == {1: b"x" * (8 * MIB), 2: b"done\n"}
    assert api.wait(container)["StatusCode"] == 0
    sock.close()
    api.remove_container(container)


def test_a_client_that_never_reads_does_not_keep_the_end_from_being_recorded(api, agent):
    command = ["sh", "-c", "head -c 8388608 /dev/zero; sleep 600"]
    container = api.create_container("busybox", command)
    sock = _attach(api, container)
    api.start(container)
    sock.recv(1)  # attached and flowing; never read again
    api.kill(container)  # answered once the exit is recorded: the stuck tap is let go
    assert api.inspect_container(container)["State"]["ExitCode"] == 137
    sock.shutdown(socket.SHUT_RDWR)  # (docker-py's response holds the fd open past close)
    sock.close()
    api.remove_container(container)
    assert _taps_let_go(agent)


def test_start_attached_to_an_ended_container_gets_the_new_runs_output_and_stdin(agent):
    name = "again"
    ok(agent.docker("create", "-i", "--name", name, "busybox", "sh", "-c", "read x; echo got-$x"))
    assert ok(agent.docker("start", "-ai", name, input="one\n")) == "got-one\n"
    assert ok(agent.docker("start", "-ai", name, input="two\n")) == "got-two\n"
    assert ok(agent.docker("logs", name)) == "got-one\ngot-two\n"
    ok(agent.docker("rm", name))


def test_attaches_that_left_before_the_start_are_let_go_once_it_runs(api, agent):
    container = api.create_container("busybox", ["echo", "hi"])
    for _ in range(20):
        leaving = _attach(api, container)
        leaving.shutdown(socket.SHUT_RDWR)
        leaving.close()
    staying = _attach(api, container)
    api.start(container)
    assert _demux(_until_eof(staying)) == {1: b"hi\n", 2: b""}
    staying.close()
    api.wait(container)
    assert _taps_let_go(agent)
    api.remove_container(container)


def test_removing_a_container_ends_the_attaches_waiting_for_its_start(api):
    container = api.create_container("busybox", ["echo", "never"])
    sock = _attach(api, container)
    api.remove_container(container)
    assert _until_eof(sock) == b""
    sock.close()
