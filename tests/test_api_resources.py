"""Resource limits beyond memory and CPUs, with the real docker CLI (and docker-py where the
CLI checks an input itself) against `vmctl-agent serve`: --cpuset-cpus/--cpuset-mems (checked
from inside), --memory-swap, --memory-swappiness and --oom-kill-disable (checked in the
kernel's cgroup files: the host here has cgroup v1, which a container does not see)."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest
from agentserver import inspect, ok, serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")
V1 = Path("/sys/fs/cgroup/memory/cgroup.procs").exists()  # the host here; v2 in the VM
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-resources"), registry) as server:
        assert server.docker("pull", "busybox").returncode == 0
        yield server


def memory_file(container_id: str, file: str) -> str:
    root = Path("/sys/fs/cgroup")
    path = (
        root / "memory" / "vmctl" / container_id / file
        if V1
        else root / "vmctl" / container_id / file
    )
    return path.read_text()


def status_field(agent, field: str, *flags: str) -> str:
    status = ok(agent.docker("run", "--rm", *flags, "busybox", "cat", "/proc/self/status"))
    return next(
        line.split(":")[1].strip() for line in status.splitlines() if line.startswith(field)
    )


def test_cpuset_cpus_and_mems_bind_the_container(agent):
    last = max(os.sched_getaffinity(0))
    assert status_field(agent, "Cpus_allowed_list", "--cpuset-cpus", str(last)) == str(last)
    assert status_field(agent, "Mems_allowed_list", "--cpuset-mems", "0") == "0"
    ok(agent.docker("create", "--cpuset-cpus", f"0-{last}", "--name", "cs", "busybox"))
    assert inspect(agent, "cs")["HostConfig"]["CpusetCpus"] == f"0-{last}"
    ok(agent.docker("rm", "cs"))


def test_cpusets_that_are_not_there_or_not_lists_are_refused(agent):
    containers = sorted(os.listdir(agent.data_root / "containers"))
    out = agent.docker("run", "--rm", "--cpuset-cpus", "64", "busybox", "true")
    assert "Requested CPUs are not available - requested 64, available: 0" in out.stderr
    out = agent.docker("run", "--rm", "--cpuset-cpus", "1-x", "busybox", "true")
    assert "Invalid value 1-x for cpuset cpus" in out.stderr
    out = agent.docker("run", "--rm", "--cpuset-mems", "9", "busybox", "true")
    assert "Requested memory nodes are not available - requested 9, available: 0" in out.stderr
    assert sorted(os.listdir(agent.data_root / "containers")) == containers


@pytest.mark.skipif(not V1, reason="v1 files: the VM's tests cover v2")
def test_memory_swap_swappiness_and_oom_kill_disable_reach_the_kernel(agent):
    flags = ("-m", "64m", "--memory-swap", "96m", "--memory-swappiness", "40", "--oom-kill-disable")
    ok(agent.docker("run", "-d", "--name", "mem", *flags, "busybox", "sleep", "1000"))
    container_id = inspect(agent, "mem")["Id"]
    assert int(memory_file(container_id, "memory.memsw.limit_in_bytes")) == 96 * MIB
    assert int(memory_file(container_id, "memory.swappiness")) == 40
    assert "oom_kill_disable 1" in memory_file(container_id, "memory.oom_control")
    host = inspect(agent, "mem")["HostConfig"]
    assert (host["MemorySwap"], host["MemorySwappiness"], host["OomKillDisable"]) == (
        96 * MIB, 40, True,
    )  # fmt: skip
    ok(agent.docker("rm", "-f", "mem"))
    ok(
        agent.docker(
            "run",
            "-d",
            "--name",
            "nolimit",
            "-m",
            "64m",
            "--memory-swap",
            "-1",
            "busybox",
            "sleep",
            "1000",
        )
    )
    container_id = inspect(agent, "nolimit")["Id"]
    assert int(memory_file(container_id, "memory.memsw.limit_in_bytes")) > 1 << 60
    ok(agent.docker("rm", "-f", "nolimit"))


def test_memory_swap_defaults_to_twice_memory(agent):
    ok(agent.docker("create", "-m", "64m", "--name", "twice", "busybox"))
    assert inspect(agent, "twice")["HostConfig"]["MemorySwap"] == 128 * MIB
    ok(agent.docker("rm", "twice"))


def test_oom_kill_disable_without_memory_warns_as_dockerd(agent):
    out = agent.docker("create", "--oom-kill-disable", "--name", "warned", "busybox")
    assert "OOM killer is disabled for the container, but no memory limit is set" in out.stderr
    ok(agent.docker("rm", "warned"))


NO_MEMORY = "You should always set the Memory limit when using Memoryswap limit"
SWAP_BELOW = "Minimum memoryswap limit should be larger than memory limit"
BAD_LIMITS = [
    ({"memswap_limit": 128 * MIB}, NO_MEMORY),
    ({"mem_limit": 128 * MIB, "memswap_limit": 64 * MIB}, SWAP_BELOW),
    ({"mem_swappiness": 101}, "Invalid value: 101, valid memory swappiness range is 0-100"),
]


@pytest.mark.parametrize(("limits", "message"), BAD_LIMITS)
def test_bad_memory_limits_are_refused_and_nothing_is_made(agent, limits, message):
    client = docker.APIClient(base_url=agent.url, version="1.47")
    containers = sorted(os.listdir(agent.data_root / "containers"))
    with pytest.raises(docker.errors.APIError) as refused:
        client.create_container(
            "busybox", ["true"], host_config=client.create_host_config(**limits)
        )
    assert refused.value.status_code == 400 and message in refused.value.explanation
    assert sorted(os.listdir(agent.data_root / "containers")) == containers
    client.close()
