"""docker run's isolation and resource flags in a real VM (cgroup v2, Debian's guest image),
checked from inside the containers: what the host's cgroup v1 tests cannot see."""

from __future__ import annotations

import pytest
from uservm import ok

pytestmark = pytest.mark.slow


def run(vm, *args: str) -> str:
    return ok(vm.docker("run", "--rm", *args)).strip()


def test_init_is_the_guest_images_tini(user_vm):
    cmdline = run(user_vm, "--init", "busybox", "cat", "/proc/1/cmdline").split("\0")
    assert cmdline[:3] == ["/sbin/docker-init", "--", "cat"]


def test_cpuset_and_memory_swap_in_the_containers_own_cgroup(user_vm):
    script = "cat /sys/fs/cgroup/cpuset.cpus /sys/fs/cgroup/memory.swap.max"
    out = run(
        user_vm, "--cpuset-cpus", "1", "-m", "64m", "--memory-swap", "96m",
        "busybox", "sh", "-c", script,
    )  # fmt: skip
    assert out.split() == ["1", str(32 * 1024 * 1024)]  # swap = memory+swap - memory


def test_v1_only_memory_flags_are_dropped_with_dockerds_warnings(user_vm):
    out = user_vm.docker("create", "--memory-swappiness", "10", "--oom-kill-disable", "busybox")
    assert "Memory swappiness discarded." in out.stderr
    assert "OomKillDisable discarded." in out.stderr
    ok(user_vm.docker("rm", out.stdout.strip()))


def test_cgroup_namespace_private_by_default_and_host_on_request(user_vm):
    assert run(user_vm, "busybox", "cat", "/proc/self/cgroup") == "0::/"
    host = run(user_vm, "--cgroupns", "host", "busybox", "cat", "/proc/self/cgroup")
    assert host.startswith("0::/vmctl/")


def test_read_only_ulimit_sysctl_and_rotation(user_vm):
    script = "ulimit -n; cat /proc/sys/net/ipv4/ip_forward; touch /x 2>/dev/null || echo ro"
    out = run(
        user_vm, "--read-only", "--ulimit", "nofile=123:123", "--sysctl", "net.ipv4.ip_forward=1",
        "busybox", "sh", "-c", script,
    )  # fmt: skip
    assert out.split() == ["123", "1", "ro"]
    lines = "for i in $(seq 1 100); do echo line-$i-..............................; done"
    ok(user_vm.docker("run", "--name", "rotated", "--log-opt", "max-size=1k", "--log-opt",
                      "max-file=50", "busybox", "sh", "-c", lines))  # fmt: skip
    logged = ok(user_vm.docker("logs", "rotated")).split()
    assert [int(line.split("-")[1]) for line in logged] == list(range(1, 101))
    ok(user_vm.docker("rm", "rotated"))
