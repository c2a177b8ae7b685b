"""The engine's memory (issue 13): the engine opts out of transparent huge pages, which the
guest's kernel (THP always) would spend 2 MiB at a time on its thread stacks and arenas, while
what runs in a container keeps the machine's setting, as under dockerd: its first process,
`docker exec` and healthcheck probes. With the real docker CLI against `vmctl-agent serve`.
Published ports are carried through a buffer mapped per connection (unmapped at its end): every
byte each way, more than a buffer's worth, with each direction's end passed on. One thread
waits for every running container's end, and one timer thread for their healthcheck probes and
restart back-offs: each end is still seen, published and acted on, each probe still runs, and
the engine's threads no longer grow with its running containers.
Issue 13's figure: with 20 containers on 3 networks the engine stays within 40 MiB, counted as
the guest's kernel (THP always) would count its pages (tests/memkit.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from agentserver import PATIENCE, events, inspect, ok, serving, until
from memkit import HUGE, PAGE, block_bound, guest_rss, huge_pages_allowed
from netkit import clear, netns_agent
from vmctl_agent.network import proxy
from vmctl_agent.runtime import pids
from vmctl_agent.runtime.exitwatch import ExitWatch
from vmctl_agent.runtime.timers import Timers

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-memory"), registry) as server:
        assert server.docker("pull", "busybox").returncode == 0
        yield server


def huge_pages(pid: int) -> str:
    """The process's THP_enabled: 0 once it opted out (prctl PR_SET_THP_DISABLE)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("THP_enabled:"):
            return line.split()[1]
    raise AssertionError(f"no THP_enabled in /proc/{pid}/status")


@needs_root
def test_the_engine_and_its_shims_opt_out_and_containers_keep_the_machines_setting(agent):
    assert huge_pages(agent.process.pid) == "0"
    ok(agent.docker("run", "-d", "--name", "thp", "busybox", "sleep", "600"))
    try:
        directory = agent.data_root / "containers" / inspect(agent, "thp")["Id"]
        shim = json.loads((directory / "state.json").read_text())["shim_pid"]
        assert huge_pages(shim) == "0"
        assert huge_pages(inspect(agent, "thp")["State"]["Pid"]) == "1"
        status = ok(agent.docker("exec", "thp", "cat", "/proc/self/status"))
        assert "THP_enabled:\t1" in status
        as_user = ("run", "--rm", "--user", "1000", "busybox", "grep", "THP_", "/proc/self/status")
        assert ok(agent.docker(*as_user)) == "THP_enabled:\t1\n"  # after setuid too
    finally:
        ok(agent.docker("rm", "-f", "thp"))


@needs_root
def test_a_healthcheck_probe_keeps_the_machines_setting(agent):
    ok(agent.docker("run", "-d", "--name", "thp-probe", "--health-interval", "1s",
                    "--health-cmd", "grep THP_enabled /proc/self/status",
                    "busybox", "sleep", "600"))  # fmt: skip
    try:
        health = until(lambda: inspect(agent, "thp-probe")["State"].get("Health", {}).get("Log"),
                       "the first probe's result")  # fmt: skip
        assert health[0]["ExitCode"] == 0 and health[0]["Output"] == "THP_enabled:\t1\n"
    finally:
        ok(agent.docker("rm", "-f", "thp-probe"))


def _upstream(listener: socket.socket, reply: bytes, got: list) -> None:
    """Read to the client's end (its half-close must arrive), then answer and close."""
    conn, _ = listener.accept()
    conn.settimeout(PATIENCE)  # a lost half-close fails the test instead of hanging it
    with conn:
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        got.append(data)
        conn.sendall(reply)


def test_a_published_port_carries_every_byte_each_way_and_each_end():
    sent, reply = os.urandom(proxy._CHUNK * 4 + 123), os.urandom(proxy._CHUNK * 3 + 7)
    got: list[bytes] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        upstream = threading.Thread(target=_upstream, args=(listener, reply, got))
        upstream.start()
        ours, theirs = socket.socketpair()
        carrier = threading.Thread(target=proxy.carry, args=(theirs, listener.getsockname()))
        carrier.start()
        with ours:
            ours.settimeout(PATIENCE)
            ours.sendall(sent)
            ours.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := ours.recv(65536):
                received += chunk
        upstream.join()
        carrier.join()
    assert hashlib.sha256(got[0]).digest() == hashlib.sha256(sent).digest()
    assert hashlib.sha256(received).digest() == hashlib.sha256(reply).digest()
    assert theirs.fileno() == -1  # the carrier closed its side


def test_one_exit_watch_calls_back_for_each_process_as_it_ends():
    watch, seen = ExitWatch(), []
    children = [subprocess.Popen(["cat"], stdin=subprocess.PIPE) for _ in range(5)]
    ended = {child.pid: threading.Event() for child in children}
    for child in children:
        then = lambda pid=child.pid: (seen.append(pid), ended[pid].set())  # noqa: E731
        watch.when_ended(child.pid, pids.start_time(child.pid), then)
    assert watch.watched() == 5 and seen == []
    for n, child in enumerate(reversed(children)):
        child.stdin.close()  # cat ends at its input's end
        assert ended[child.pid].wait(PATIENCE)
        child.wait()
        until(lambda n=n: watch.watched() == 4 - n, "the ended process to be dropped")
    assert seen == [child.pid for child in reversed(children)]


def test_timers_call_each_when_due_and_a_nearer_deadline_first():
    timers, called = Timers(), []
    done = threading.Semaphore(0)

    def then(label: str, due: float) -> None:
        called.append((label, time.monotonic() >= due))
        done.release()

    timers.after(3600, lambda: then("later", 0))  # not due while the test runs
    for n in range(5):
        due = time.monotonic() + n * 0.01
        timers.after(n * 0.01, lambda n=n, due=due: then(f"soon{n}", due))
    for _ in range(5):
        assert done.acquire(timeout=PATIENCE)
    assert sorted(called) == [(f"soon{n}", True) for n in range(5)]
    assert timers.pending() == 1


def test_an_ended_or_other_process_is_called_back_at_once():
    watch, called = ExitWatch(), threading.Semaphore(0)
    gone = subprocess.Popen(["true"])
    gone.wait()
    watch.when_ended(gone.pid, 0, called.release)  # collected already
    watch.when_ended(os.getpid(), 1, called.release)  # a pid that is someone else by now
    assert called.acquire(timeout=PATIENCE) and called.acquire(timeout=PATIENCE)
    assert watch.watched() == 0


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


@needs_root
def test_many_containers_share_one_watch_and_each_end_is_acted_on(agent):
    before = threads(agent.process.pid)
    names = [f"watched{n}" for n in range(8)]
    for n, name in enumerate(names):  # half come back once after a failure, half stay down
        policy = ("--restart", "on-failure:1") if n % 2 else ()
        ok(agent.docker("run", "-d", "--name", name, *policy, "busybox", "sleep", "600"))
    since = time.time()
    try:
        assert until(lambda: threads(agent.process.pid) <= before + 2, "one thread for all")
        _kill_all(agent, names)
        for n, name in enumerate(names):
            _until_state(agent, name, ("running", 1) if n % 2 else ("exited", 0))
        _kill_all(agent, names[1::2])  # the runs that came back are watched too
        for name in names[1::2]:
            _until_state(agent, name, ("exited", 1))
        for n, name in enumerate(names):
            dies = [e for e in events(agent, name, since) if e["Action"] == "die"]
            assert [e["Actor"]["Attributes"]["exitCode"] for e in dies] == ["137"] * (1 + n % 2)
        assert until(lambda: threads(agent.process.pid) <= before + 2, "one thread for all")
    finally:
        for name in names:
            agent.docker("rm", "-f", name)


@needs_root
def test_many_healthchecks_share_one_timer_and_each_probe_runs(agent):
    before = threads(agent.process.pid)
    names = [f"checked{n}" for n in range(8)]
    since = time.time()
    for name in names:  # probed every second until healthy, then every hour
        ok(agent.docker("run", "-d", "--name", name, "--health-cmd", "true",
                        "--health-interval", "1h", "--health-start-period", "1h",
                        "--health-start-interval", "1s", "busybox", "sleep", "600"))  # fmt: skip
    try:
        for name in names:
            until(lambda name=name: _health(agent, name) == "healthy", f"{name} healthy")
            actions = [e["Action"] for e in events(agent, name, since)]
            assert actions.count("health_status: healthy") == 1
        assert until(lambda: threads(agent.process.pid) <= before + 2, "one thread for all")
    finally:
        for name in names:
            agent.docker("rm", "-f", name)


def _health(agent, name: str) -> str:
    return inspect(agent, name)["State"].get("Health", {}).get("Status", "")


def _kill_all(agent, names: list[str]) -> None:
    """SIGKILL each container's process from outside the engine: a failure, not a stop."""
    for name in names:
        os.kill(inspect(agent, name)["State"]["Pid"], signal.SIGKILL)


def _until_state(agent, name: str, expected: tuple[str, int]) -> None:
    def reached() -> bool:
        container = inspect(agent, name)
        return (container["State"]["Status"], container["RestartCount"]) == expected

    until(reached, f"{name} {expected}")


@needs_root
def test_the_engine_with_20_containers_on_3_networks_stays_within_40_mib(tmp_path, registry):
    with netns_agent(tmp_path, registry) as agent:
        networks = [f"fleet{n}" for n in range(3)]
        for network in networks:
            ok(agent.docker("network", "create", network))
        for n in range(20):
            ok(agent.docker("run", "-d", "--name", f"fleet-c{n}", "--network", networks[n % 3],
                            "busybox", "sleep", "600"))  # fmt: skip
        assert not huge_pages_allowed(agent.process.pid)
        assert guest_rss(agent.process.pid) <= 40 * 1024
        clear(agent)


def test_the_guests_bound_counts_a_whole_huge_page_for_each_touched_block():
    aligned = [False] * 1024
    aligned[3] = aligned[600] = True  # one page in each of two blocks
    assert block_bound((HUGE, aligned)) == 2 * HUGE
    skewed = [False] * 515  # 2 pages before the first aligned block, 1 after it
    skewed[0] = skewed[100] = skewed[514] = True
    assert block_bound((HUGE - 2 * PAGE, skewed)) == HUGE + 2 * PAGE
    assert block_bound((PAGE, [True] * 3)) == 3 * PAGE  # too small for a huge page
