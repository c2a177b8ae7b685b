"""The engine's memory (issue 13): the engine opts out of transparent huge pages, which the
guest's kernel (THP always) would spend 2 MiB at a time on its thread stacks and arenas, while
what runs in a container keeps the machine's setting, as under dockerd: its first process,
`docker exec` and healthcheck probes. With the real docker CLI against `vmctl-agent serve`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from agentserver import inspect, ok, serving, until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


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
    finally:
        ok(agent.docker("rm", "-f", "thp"))


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
