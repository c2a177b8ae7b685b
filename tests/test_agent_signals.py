"""SIGTERM stops the engine whichever of its threads the kernel hands the signal to. Python
runs its handlers in the main thread only: a main thread blocked in a wait without end never
ran it when the signal went to another thread (a test's agent once outlived its SIGTERM)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time

import pytest
from agentserver import PATIENCE, ok, serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")

SYS_TGKILL = 234  # x86_64


def test_sigterm_given_to_another_thread_still_stops_the_engine(tmp_path, registry):
    with serving(tmp_path, registry) as agent:
        ok(agent.docker("run", "-d", "--name", "watched", "busybox", "sleep", "60"))
        ok(agent.docker("rm", "-f", "watched"))
        pid = agent.process.pid
        others = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
        assert others, "the engine runs threads beside its main one"
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(SYS_TGKILL, pid, others[0], signal.SIGTERM) == 0
        assert agent.process.wait(timeout=PATIENCE) == 0
        assert not agent.socket.exists(), "a stopped engine leaves no socket"


def test_a_sigterm_as_soon_as_the_socket_exists_stops_the_engine_cleanly(tmp_path):
    """Whoever waits for the socket may stop the engine the moment it appears: the handler
    is in place before the socket is made, so the exit is clean and leaves no socket."""
    sock = tmp_path / "engine.sock"
    cmd = ["vmctl-agent", "serve", "--listen", f"unix://{sock}", "--data-root", str(tmp_path)]
    for _ in range(10):
        agent = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        while not sock.exists() and agent.poll() is None:
            time.sleep(0.001)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=PATIENCE) == 0  # not -15: the default action's death
        assert not sock.exists(), "a stopped engine leaves no socket"
