"""The whole product, as a user drives it, for each driver under TCG: `vmctl start` boots the
offline image, provisions it, deploys the agent and hands the host a docker socket; the real
docker CLI runs a container pulled by the guest from this host's loopback registry; the QEMU
process is killed and status notices; start again; stop; delete leaves nothing behind.

Slow (a first boot under software emulation takes over a minute): marked, and run by CI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import imagekit as ik
import pytest
import uservm
import vmkit
from agentserver import docker_cli
from uservm import docker, ok, vmctl

from vmctl import disk

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_image():
    return vmkit.built_image()


@pytest.fixture(scope="module", params=uservm.DRIVERS)
def booted(request, base_image, registry, tmp_path_factory):
    """One VM per driver for this file alone: its tests kill, stop and delete it."""
    driver = request.param
    home = tmp_path_factory.mktemp(f"home-{driver}")
    name = f"e2e-{driver}-{os.getpid()}"
    with uservm.started(home, name, driver, base_image.disk, registry) as vm:
        yield vm.home, vm.name


def test_start_prints_the_stages_and_the_socket(booted):
    home, name = booted
    shown = json.loads(ok(vmctl(home, "status", "--name", name, "--json")))
    assert shown["state"] == "running"
    # Here KVM is present but hangs, so the probe must pick TCG; a machine whose KVM works
    # boots with it. A wrong pick never gets this far: the VM would not have booted.
    assert shown["accel"] in ("kvm", "tcg")
    if shown["accel"] == "tcg":  # the features TCG emulates slowly are not offered to the guest
        flags = ok(
            vmctl(home, "ssh", "--name", name, "--", "grep", "-m1", "^flags", "/proc/cpuinfo")
        )
        assert {"erms", "fsrm"}.isdisjoint(flags.split()) and "rep_good" in flags.split()
    assert shown["docker_host"] == f"unix://{home / name / 'docker.sock'}"
    assert oct((home / name / "docker.sock").stat().st_mode & 0o777) == "0o600"


def test_docker_version_says_linux_amd64_and_a_container_runs(booted):
    home, name = booted
    version = ok(vmctl(home, "version", "--name", name))
    assert re.search(r"Server: .*\n(.*\n)*  OS/Arch:\s+linux/amd64", version), version
    assert re.search(r"Kernel Version:\s+6\.1\.0-\d+-amd64\n", version), version  # the guest's

    context = ok(vmctl(home, "docker-context", "--name", name)).strip()
    env = {**os.environ, "DOCKER_CONTEXT": context}
    by_context = subprocess.run(
        [docker_cli(), "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert by_context.stdout.strip() == "linux/amd64", by_context.stderr

    run = docker(home, name, "run", "--rm", "busybox", "sh", "-c", "echo hello from $(uname -m)")
    assert ok(run) == "hello from x86_64\n"
    assert "Unable to find image 'busybox:latest' locally" in run.stderr


def test_the_guest_has_cgroup_v2_and_limits_hold(booted):
    """The runtime's cgroup v2 path, which this host (cgroup v1) cannot exercise."""
    home, name = booted
    limits = docker(
        home, name, "run", "--rm", "--memory", "64m", "--pids-limit", "50", "--cpus", "0.5",
        "busybox", "sh", "-c",
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max;"
        " cat /proc/self/cgroup",
    )  # fmt: skip
    assert ok(limits).splitlines() == [str(64 << 20), "50", "50000 100000", "0::/"]
    hog = docker(
        home, name, "run", "--name", "hog", "--memory", "32m", "busybox", "sh", "-c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    )  # fmt: skip
    assert hog.returncode == 137, hog.stdout + hog.stderr
    state = ok(docker(home, name, "inspect", "hog", "--format", "{{.State.OOMKilled}}"))
    assert state.strip() == "true"
    ok(docker(home, name, "rm", "hog"))


def test_pause_and_update_use_the_v2_freezer_and_limits(booted):
    """pause, unpause and update through cgroup v2's files, which this host cannot show."""
    home, name = booted
    ok(docker(home, name, "run", "-d", "--name", "icy", "busybox", "sleep", "1000"))
    container_id = ok(docker(home, name, "inspect", "icy", "--format", "{{.Id}}")).strip()
    leaf = f"/sys/fs/cgroup/vmctl/{container_id}"
    ok(docker(home, name, "pause", "icy"))
    assert ok(docker(home, name, "inspect", "icy", "--format", "{{.State.Status}}")) == "paused\n"
    frozen = ok(vmctl(home, "ssh", "--name", name, "--", "cat", f"{leaf}/cgroup.events"))
    assert "frozen 1" in frozen.splitlines()
    ok(docker(home, name, "unpause", "icy"))
    ok(docker(home, name, "update", "--memory", "48m", "--pids-limit", "40", "icy"))
    files = ok(
        vmctl(
            home,
            "ssh",
            "--name",
            name,
            "--",
            "cat",
            f"{leaf}/cgroup.freeze",
            f"{leaf}/memory.max",
            f"{leaf}/pids.max",
        )
    )
    assert files.split() == ["0", str(48 << 20), "40"]
    ok(docker(home, name, "rm", "-f", "icy"))


def test_ssh_runs_commands_in_the_guest(booted):
    home, name = booted
    assert ok(vmctl(home, "ssh", "--name", name, "--", "uname", "-m")).strip() == "x86_64"
    groups = ok(vmctl(home, "ssh", "--name", name, "--", "id", "-nG")).split()
    assert "docker" in groups


def test_deleted_data_returns_space_to_the_host(booted):
    """discard=unmap on the disk plus fstrim in the guest: the qcow2 shrinks back."""
    home, name = booted
    path = home / name / "disk.qcow2"
    before = disk.info(path).actual_size
    ssh = ("ssh", "--name", name, "--")
    ok(vmctl(home, *ssh, "sh", "-c", "head -c 300000000 /dev/urandom > big && sync"))
    grown = disk.info(path).actual_size
    ok(vmctl(home, *ssh, "sh", "-c", "rm big && sync && sudo fstrim /"))
    trimmed = disk.info(path).actual_size
    assert grown - before > 250 << 20
    assert grown - trimmed > 250 << 20, (before, grown, trimmed)
    timer = ok(vmctl(home, *ssh, "systemctl", "is-enabled", "fstrim.timer")).strip()
    assert timer == "enabled"


def test_the_guest_clock_is_put_right_when_the_host_agent_connects(booted):
    home, name = booted
    ssh = ("ssh", "--name", name, "--")
    ok(vmctl(home, *ssh, "sudo", "date", "-u", "-s", "@1000000000"))
    pid = int((home / name / "hostagent.pid").read_text())
    os.kill(pid, 15)
    ok(vmctl(home, "start", "--name", name))  # running VM: only the host agent comes back
    before = time.time()
    guest_now = int(ok(vmctl(home, *ssh, "date", "+%s")))
    assert before - 2 <= guest_now <= time.time() + 2  # however long the command took


def proof_image(registry, tag: str) -> tuple[str, str]:
    """A fresh image (busybox and a layer of its own, with a file of 256 KiB of text) pushed
    as REPO:tag; its reference as the guest pulls it, and the file's text."""
    words = "".join(f"{tag} line {i:06d}\n" for i in range(256 * 1024 // 20)).encode()
    layer = ik.tar_bytes([ik.directory("proof"), ik.file("proof/words", words)])
    image = ik.build_image([ik.busybox_layer(), layer], config={"Cmd": ["cat", "/proof/words"]})
    ik.RegistryClient(registry.url).push_image("kill/proof", tag, image)
    return f"10.0.2.2:{registry.port}/kill/proof:{tag}", words.decode()


def qemu_pid(home: Path, name: str) -> int:
    shown = json.loads(ok(vmctl(home, "status", "--name", name, "--json")))
    assert shown["pid"] and Path(f"/proc/{shown['pid']}").exists(), shown
    return shown["pid"]


def kill_qemu(pid: int) -> None:
    """SIGKILL to QEMU: the VM's power cut, as a host crash or a force quit does it."""
    os.kill(pid, 9)
    vmkit.wait_until_gone(pid)


def test_what_the_engine_reported_done_survives_qemu_being_killed(booted, registry):
    """Images, containers and their logs, once the engine has reported them done, are still
    there after the VM's power is cut: some seconds later (early), right after a container's
    end was reported (late), and right after a pull returned (last). A killed QEMU reads as
    stopped as soon as it is gone, and a start brings the VM back."""
    home, name = booted
    early, early_words = proof_image(registry, "early")
    late, late_words = proof_image(registry, "late")
    last, last_words = proof_image(registry, "last")
    ok(docker(home, name, "run", "--name", "survivor-early", early, "echo", "early output"))
    ok(docker(home, name, "run", "--name", "survivor-late", late, "echo", "late output"))
    for container, policy in (("policy-always", "always"), ("policy-no", "no")):
        ok(docker(home, name, "run", "-d", "--name", container, "--restart", policy,
                  "busybox", "sleep", "100000"))  # fmt: skip
    pid = qemu_pid(home, name)
    listed = ok(docker(home, name, "images", "--format", "{{.Repository}}:{{.Tag}}")).split()
    ok(docker(home, name, "pull", last))
    kill_qemu(pid)  # within milliseconds of the pull's answer
    state = json.loads(ok(vmctl(home, "status", "--name", name, "--json")))["state"]
    assert state == "stopped"

    began = time.monotonic()
    ok(vmctl(home, "start", "--name", name))
    print(f"restart after kill: {time.monotonic() - began:.0f} s")
    images = ok(docker(home, name, "images", "--format", "{{.Repository}}:{{.Tag}}")).split()
    assert {*listed, last} <= set(images), images  # busybox too: pulled by an earlier test
    for ref, words in ((early, early_words), (late, late_words), (last, last_words)):
        assert ok(docker(home, name, "run", "--rm", ref)) == words, f"{ref}'s layer is torn"
    for which in ("early", "late"):
        shown = ok(docker(home, name, "ps", "-a", "--filter", f"name=survivor-{which}",
                          "--format", "{{.Names}} {{.Status}}"))  # fmt: skip
        assert re.fullmatch(rf"survivor-{which} Exited \(0\) .*\n", shown), shown
        assert ok(docker(home, name, "logs", f"survivor-{which}")) == f"{which} output\n"
        ok(docker(home, name, "rm", f"survivor-{which}"))
    # The restart policies: the engine brings back what `always` wants running, as Docker
    # Desktop does, and leaves the others exited.
    status = "{{.State.Status}}"
    deadline = time.monotonic() + 300  # the agent brings it back right after it starts
    while ok(docker(home, name, "inspect", "policy-always", "--format", status)) != "running\n":
        assert time.monotonic() < deadline, "the always container did not come back"
        time.sleep(0.5)
    assert ok(docker(home, name, "inspect", "policy-no", "--format", status)) == "exited\n"
    ok(docker(home, name, "rm", "-f", "policy-always", "policy-no"))


def test_stop_then_delete_leaves_nothing_behind(booted):
    home, name = booted
    assert ok(vmctl(home, "stop", "--name", name)).strip() == "stopped"
    assert not (home / name / "docker.sock").exists()
    assert vmctl(home, "status", "--name", name).stdout.startswith(f"{name}: stopped")
    ok(vmctl(home, "delete", "--name", name))
    assert not (home / name).exists()
    assert vmctl(home, "status", "--name", name).stdout.strip() == f"{name}: not created"
    leftovers = subprocess.run(["pgrep", "-f", f"vmctl-{name}"], capture_output=True, text=True)
    assert leftovers.stdout == ""
    domains = subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert f"vmctl-{name}" not in domains.stdout.split()
    assert not Path(f"/var/log/libvirt/qemu/vmctl-{name}.log").exists()
