"""A build's workspace after the agent dies mid-build (SIGKILL): the next start removes it,
with its step container (whose shim outlived the agent) and anything still mounted below it,
before it serves."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from agentserver import inspect, serving, until
from contextkit import containers, start_build

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


def mounts_below(path: Path) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(f"{path}/")]


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_the_next_start_removes_what_an_agent_killed_mid_build_left(tmp_path, registry):
    with serving(tmp_path, registry) as agent:
        sock = start_build(agent, b"FROM busybox\nRUN echo started; sleep 1000\n", "t=killed")
        (step,) = containers(agent)
        step_pid = inspect(agent, step)["State"]["Pid"]
        (work,) = (agent.data_root / "builds").iterdir()
        agent.process.kill()
        agent.process.wait()
        sock.close()
        assert not gone(step_pid)  # the step's shim and process outlive the agent
        # Something mounted below the workspace (a kernel that keeps a step's mount): the
        # start must detach it before deleting, or it would delete what the mount shows.
        shown = tmp_path / "shown"
        shown.mkdir()
        (shown / "keep").write_text("not the build's")
        (work / "mounted").mkdir()
        subprocess.run(["mount", "--bind", str(shown), str(work / "mounted")], check=True)
        try:
            agent.socket.unlink()
            agent._launch()  # serving once the sweep is done
            assert list((agent.data_root / "builds").iterdir()) == []
            assert mounts_below(agent.data_root) == []
            assert (shown / "keep").read_text() == "not the build's"
            assert containers(agent) == []
            until(lambda: gone(step_pid), "the step's process gone")
            assert agent.docker("image", "inspect", "killed").returncode != 0
        finally:
            if mounts_below(agent.data_root):
                subprocess.run(["umount", "-l", str(work / "mounted")], check=False)
