"""The host agent without a VM: a real engine and a real sshd on this host stand in for the
guest, so forwarding docker.sock over SSH is tested by the real docker CLI in seconds."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import vmkit
from agentserver import AgentServer, docker_cli, push_test_images
from sshkit import Sshd

from vmctl import config as vmconfig
from vmctl import hostagent, locks, vm
from vmctl import paths as vmpaths
from vmctl.errors import VmctlError


@pytest.fixture
def rig(tmp_path, monkeypatch, registry):
    """An engine on a unix socket, an sshd in front of it, and a VM directory pointing at both."""
    push_test_images(registry)
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VMCTL_HOSTAGENT_GIVE_UP", "3")
    (tmp_path / "engine").mkdir()
    engine = AgentServer(tmp_path / "engine", registry)
    sshd = Sshd(tmp_path / "sshd")
    paths = vmpaths.vm("hostagent-test")
    paths.root.mkdir(parents=True)
    vmconfig.save(vmconfig.VMConfig(driver="qemu"), paths.config)  # no QEMU runs: "stopped"
    shutil.copy(sshd.endpoint.key, paths.ssh_key)
    paths.host_key_pub.write_text(sshd.endpoint.host_key + "\n")
    runtime = {
        "ssh_port": sshd.port,
        "ssh_user": "root",
        "engine_socket": str(engine.socket),
        "clock_sync": False,  # the "guest" is this host: never set its clock
    }
    paths.runtime.write_text(json.dumps(runtime))
    yield paths, engine, sshd
    vm.stop_hostagent(paths)
    sshd.stop()
    engine.stop()


def docker(paths, *args, input=None):
    env = {**os.environ, "DOCKER_HOST": f"unix://{paths.docker_sock}"}
    return subprocess.run(
        [docker_cli(), *args], capture_output=True, text=True, input=input, env=env, timeout=60
    )


def test_docker_cli_through_the_forwarded_socket(rig):
    paths, _engine, _sshd = rig
    vm.spawn_hostagent(paths)
    assert vm.ping(vm.docker_host(paths), timeout=10)
    assert stat.S_IMODE(paths.docker_sock.stat().st_mode) == 0o600

    version = docker(paths, "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}")
    assert version.stdout.strip() == "linux/amd64", version.stderr
    # A hijacked attach with stdin: the forward must carry the half-close both ways.
    run = docker(paths, "run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z", input="forwarded\n")
    assert (run.returncode, run.stdout) == (0, "FORWARDED\n"), run.stderr
    assert "serving" in paths.hostagent_log.read_text()


def test_reconnects_after_the_ssh_server_restarts(rig, tmp_path):
    paths, _engine, sshd = rig
    vm.spawn_hostagent(paths)
    assert docker(paths, "info", "--format", "{{.OSType}}").stdout.strip() == "linux"
    sshd.stop()
    again = Sshd(tmp_path / "sshd", port=sshd.port)  # same keys, same port: a rebooted VM
    try:
        info = docker(paths, "info", "--format", "{{.OSType}}")
        assert info.stdout.strip() == "linux", info.stderr
        assert "reconnecting" in paths.hostagent_log.read_text()
    finally:
        again.stop()


def test_exits_and_removes_the_socket_when_the_vm_is_gone(rig):
    paths, _engine, sshd = rig
    vm.spawn_hostagent(paths)
    pid = locks.holder(paths.hostagent_pid)
    assert pid and paths.docker_sock.exists()
    sshd.stop()
    vmkit.wait_until_gone(pid)  # its exit, not a guess at how long noticing takes
    assert locks.holder(paths.hostagent_pid) is None
    assert not paths.docker_sock.exists()
    assert "hypervisor is gone: stopping" in paths.hostagent_log.read_text()


def test_one_host_agent_per_vm(rig):
    paths, _engine, _sshd = rig
    vm.spawn_hostagent(paths)
    second = subprocess.run(
        [sys.executable, "-m", "vmctl.hostagent", "--name", paths.name],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=30,
    )
    assert second.returncode == 1
    assert "another host agent already serves this VM" in second.stderr
    assert vm.ping(vm.docker_host(paths))


def test_a_loopback_tcp_port_where_there_are_no_unix_sockets(rig):
    """Windows' docker has no unix sockets: the host agent serves 127.0.0.1 only, and says
    where in docker.host, which status and docker-context read."""
    paths, _engine, _sshd = rig
    runtime = json.loads(paths.runtime.read_text())
    paths.runtime.write_text(json.dumps({**runtime, "docker_listen": "tcp"}))
    vm.spawn_hostagent(paths)
    url = vm.docker_host(paths)
    assert url.startswith("tcp://127.0.0.1:") and not paths.docker_sock.exists()
    env = {**os.environ, "DOCKER_HOST": url}
    info = subprocess.run(
        [docker_cli(), "info", "--format", "{{.OSType}}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert info.stdout.strip() == "linux", info.stderr
    vm.stop_hostagent(paths)
    assert not paths.docker_host.exists()


def test_a_hypervisor_that_cannot_be_asked_does_not_stop_the_host_agent():
    """libvirtd restarting must not cost the user their docker socket."""

    def unreachable() -> bool:
        raise VmctlError("cannot connect to qemu:///system: is libvirtd running?")

    assert hostagent._gone(unreachable) is False
    assert hostagent._gone(lambda: False) is True
    assert hostagent._gone(lambda: True) is False
