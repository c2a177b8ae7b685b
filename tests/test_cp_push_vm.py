"""`docker cp` and `docker push` against the engine in a real VM (the agent as the guest runs
it: a zipapp on Debian's python3, cgroup v2), through the host's forwarded socket: a file
into a running container's volume and back, out of it once stopped, and a push from the guest
to the host's loopback registry (10.0.2.2 from inside)."""

from __future__ import annotations

import os

import pytest
import requests
from uservm import ok

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the VMs need root (CI is root)"),
]


def test_cp_both_ways_and_push_from_the_vm(user_vm, registry, tmp_path):
    vm = user_vm
    ok(vm.docker("run", "-d", "--name", "vm-cp", "-v", "vmcpvol:/data", "busybox",
                 "sleep", "1000"))  # fmt: skip
    (tmp_path / "in.txt").write_text("from the host\n")
    ok(vm.docker("cp", str(tmp_path / "in.txt"), "vm-cp:/data/in.txt"))
    assert ok(vm.docker("exec", "vm-cp", "cat", "/data/in.txt")) == "from the host\n"
    ok(vm.docker("exec", "vm-cp", "sh", "-c", "echo made inside > /made.txt"))
    ok(vm.docker("stop", "-t", "0", "vm-cp"))
    ok(vm.docker("cp", "vm-cp:/made.txt", str(tmp_path / "made.txt")))
    ok(vm.docker("cp", "vm-cp:/data/in.txt", str(tmp_path / "back.txt")))
    assert (tmp_path / "made.txt").read_text() == "made inside\n"
    assert (tmp_path / "back.txt").read_text() == "from the host\n"
    ok(vm.docker("rm", "vm-cp"))
    ok(vm.docker("volume", "rm", "vmcpvol"))
    target = f"10.0.2.2:{registry.port}/vmpush/app:1"
    ok(vm.docker("pull", "busybox"))
    ok(vm.docker("tag", "busybox", target))
    pushed = ok(vm.docker("push", target))
    assert "1: digest: sha256:" in pushed
    digest = pushed.split("1: digest: ")[1].split()[0]
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    url = f"{registry.url}/v2/vmpush/app/manifests/1"
    manifest = requests.get(url, headers=accept, timeout=30)
    assert manifest.status_code == 200 and manifest.headers["Docker-Content-Digest"] == digest
    ok(vm.docker("rmi", target))
