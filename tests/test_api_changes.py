"""Changing a container in place with the real docker CLI against `vmctl-agent serve`: pause
and unpause (checked in the kernel's freezer), rename, update (checked in the cgroup files),
and kill with signal names."""

from __future__ import annotations

import os
import time
from pathlib import Path

import docker
import pytest
from agentserver import AgentServer, events, inspect, ok, serving, until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")

V1 = Path("/sys/fs/cgroup/freezer/cgroup.procs").exists()  # the host here; v2 in the VM


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-changes"), registry) as server:
        assert server.docker("pull", "busybox").returncode == 0
        yield server


def fails(result, message: str) -> None:
    assert result.returncode != 0 and message in result.stderr, result.stderr


def cgroup_file(controller: str, container_id: str, file: str) -> str:
    root = Path("/sys/fs/cgroup")
    path = (
        root / controller / "vmctl" / container_id / file
        if V1
        else root / "vmctl" / container_id / file
    )
    return path.read_text().strip()


def actions(agent: AgentServer, name: str, since: float) -> list[str]:
    return [event["Action"] for event in events(agent, name, since)]


def test_pause_freezes_and_unpause_thaws(agent):
    since = time.time() - 1
    ok(agent.docker("run", "-d", "--name", "icy", "busybox", "sleep", "1000"))
    container_id = inspect(agent, "icy")["Id"]
    fails(agent.docker("unpause", "icy"), f"Container {container_id} is not paused")
    ok(agent.docker("pause", "icy"))
    if V1:
        assert cgroup_file("freezer", container_id, "freezer.state") == "FROZEN"
    else:
        assert cgroup_file("", container_id, "cgroup.freeze") == "1"
    state = inspect(agent, "icy")["State"]
    assert state["Status"] == "paused" and state["Paused"] and state["Running"]
    status = ok(agent.docker("ps", "--filter", "name=icy", "--format", "{{.Status}}"))
    assert status.strip().endswith("(Paused)")
    fails(agent.docker("pause", "icy"), f"Container {container_id} is already paused")
    fails(agent.docker("exec", "icy", "true"), "is paused, unpause the container before exec")
    ok(agent.docker("unpause", "icy"))
    assert inspect(agent, "icy")["State"]["Status"] == "running"
    assert ok(agent.docker("exec", "icy", "echo", "thawed")) == "thawed\n"
    ok(agent.docker("pause", "icy"))
    ok(agent.docker("stop", "-t", "1", "icy"))  # a paused container still stops
    assert inspect(agent, "icy")["State"]["Status"] == "exited"
    fails(agent.docker("pause", "icy"), f"Container {container_id} is not running")
    seen = actions(agent, "icy", since)
    assert [a for a in seen if a in ("pause", "unpause")] == ["pause", "unpause", "pause"]
    ok(agent.docker("rm", "icy"))


def test_rename_and_its_refusals(agent):
    since = time.time() - 1
    ok(agent.docker("create", "--name", "before", "busybox", "true"))
    ok(agent.docker("create", "--name", "taken", "busybox", "true"))
    taken_id = inspect(agent, "taken")["Id"]
    ok(agent.docker("rename", "before", "after"))
    assert inspect(agent, "after")["Name"] == "/after"
    fails(agent.docker("inspect", "before"), "No such object: before")
    fails(
        agent.docker("rename", "after", "taken"),
        f'Conflict. The container name "/taken" is already in use by container "{taken_id}"',
    )
    fails(agent.docker("rename", "after", "after"), "Renaming a container with the same name")
    fails(agent.docker("rename", "after", "no/slashes"), "Invalid container name (no/slashes)")
    assert inspect(agent, "after")["Name"] == "/after" and inspect(agent, "taken")["Id"] == taken_id
    assert "rename" in actions(agent, "after", since)
    ok(agent.docker("run", "--name", "after2", "busybox", "true"))  # names stay usable
    ok(agent.docker("rm", "after", "taken", "after2"))


def test_update_changes_a_running_containers_cgroup(agent):
    script = "trap 'exit 3' HUP; while true; do sleep 0.05; done"
    ok(agent.docker("run", "-d", "--name", "grown", "busybox", "sh", "-c", script))
    container_id = inspect(agent, "grown")["Id"]
    ok(
        agent.docker(
            "update",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "50",
            "--restart",
            "on-failure:2",
            "grown",
        )
    )
    host = inspect(agent, "grown")["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 << 20, 5 * 10**8, 50)
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
    if V1:
        assert cgroup_file("memory", container_id, "memory.limit_in_bytes") == str(64 << 20)
        assert cgroup_file("cpu", container_id, "cpu.cfs_quota_us") == "50000"
        assert cgroup_file("pids", container_id, "pids.max") == "50"
    ok(agent.docker("update", "--cpu-shares", "512", "grown"))
    assert inspect(agent, "grown")["HostConfig"]["CpuShares"] == 512
    if V1:
        assert cgroup_file("cpu", container_id, "cpu.shares") == "512"
        assert cgroup_file("memory", container_id, "memory.limit_in_bytes") == str(64 << 20)
    fails(agent.docker("update", "--blkio-weight", "300", "grown"), "BlkioWeight")
    fails(agent.docker("update", "--cpus", "1000", "grown"), "Range of CPUs is from 0.01")
    fails(
        agent.docker("update", "--restart", "always:2", "grown"),
        "maximum retry count can only be used with 'on-failure'",
    )
    host = inspect(agent, "grown")["HostConfig"]
    assert host["NanoCpus"] == 5 * 10**8 and host.get("BlkioWeight", 0) == 0
    if V1:
        assert cgroup_file("cpu", container_id, "cpu.cfs_quota_us") == "50000"
    ok(agent.docker("kill", "-s", "HUP", "grown"))  # exit 3; not the stop signal: no hold
    until(lambda: inspect(agent, "grown")["RestartCount"] == 1, "the updated policy's restart")
    until(lambda: inspect(agent, "grown")["State"]["Running"], "the restarted run")
    ok(agent.docker("rm", "-f", "grown"))
    ok(agent.docker("run", "-d", "--rm", "--name", "fleeting", "busybox", "sleep", "1000"))
    fails(
        agent.docker("update", "--restart", "always", "fleeting"),
        "Restart policy cannot be updated because AutoRemove is enabled for the container",
    )
    assert inspect(agent, "fleeting")["HostConfig"]["RestartPolicy"]["Name"] == "no"
    ok(agent.docker("rm", "-f", "fleeting"))


def test_kill_takes_signal_names_and_numbers(agent):
    script = (
        "trap 'echo got HUP' HUP; trap 'echo got USR1' USR1; trap 'echo got TERM' TERM; "
        "echo ready; while true; do sleep 0.05; done"
    )
    ok(agent.docker("run", "-d", "--name", "signalled", "busybox", "sh", "-c", script))
    until(lambda: "ready" in ok(agent.docker("logs", "signalled")), "ready")
    for sig, word in (("HUP", "HUP"), ("SIGUSR1", "USR1"), ("15", "TERM")):
        ok(agent.docker("kill", "-s", sig, "signalled"))
        until(lambda w=word: f"got {w}" in ok(agent.docker("logs", "signalled")), word)
    fails(agent.docker("kill", "-s", "NOPE", "signalled"), "Invalid signal: NOPE")
    fails(agent.docker("kill", "-s", "0", "signalled"), "Invalid signal: 0")
    assert inspect(agent, "signalled")["State"]["Running"]
    ok(agent.docker("rm", "-f", "signalled"))


def test_docker_py_pauses_renames_and_updates(agent):
    client = docker.DockerClient(base_url=agent.url, version="auto")
    c = client.containers.run("busybox", ["sleep", "1000"], detach=True, name="py-before")
    c.pause()
    c.reload()
    assert c.status == "paused"
    with pytest.raises(docker.errors.APIError, match="is already paused") as conflict:
        c.pause()
    assert conflict.value.status_code == 409
    c.unpause()
    c.rename("py-after")
    c.reload()
    assert (c.name, c.status) == ("py-after", "running")
    assert c.update(mem_limit="32m", restart_policy={"Name": "unless-stopped"}) == {"Warnings": []}
    c.reload()
    assert c.attrs["HostConfig"]["Memory"] == 32 << 20
    assert c.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    c.remove(force=True)


def test_update_below_what_the_container_uses_is_refused_and_changes_nothing(agent):
    if len(Path("/proc/swaps").read_text().splitlines()) > 1:
        pytest.skip("with swap the kernel pages the usage out rather than refusing the limit")
    fill = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=30 && echo full; sleep 1000"
    ok(agent.docker("run", "-d", "--name", "full", "--memory", "64m", "busybox", "sh", "-c", fill))
    until(lambda: "full" in ok(agent.docker("logs", "full")), "30 MiB of tmpfs in use")
    container_id = inspect(agent, "full")["Id"]
    fails(
        agent.docker("update", "--memory", "8m", "full"), f"Cannot update container {container_id}"
    )
    assert inspect(agent, "full")["HostConfig"]["Memory"] == 64 << 20
    if V1:
        assert cgroup_file("memory", container_id, "memory.limit_in_bytes") == str(64 << 20)
    assert inspect(agent, "full")["State"]["Running"]
    ok(agent.docker("rm", "-f", "full"))


def test_stop_signal_and_stop_timeout_are_the_containers_own(agent):
    script = "trap 'echo got USR1' USR1; echo ready; while true; do sleep 0.05; done"
    ok(
        agent.docker(
            "run",
            "-d",
            "--name",
            "stoppy",
            "--stop-signal",
            "USR1",
            "--stop-timeout",
            "1",
            "busybox",
            "sh",
            "-c",
            script,
        )
    )
    config = inspect(agent, "stoppy")["Config"]
    assert (config["StopSignal"], config["StopTimeout"]) == ("USR1", 1)
    until(lambda: "ready" in ok(agent.docker("logs", "stoppy")), "ready")
    ok(agent.docker("stop", "stoppy"))  # USR1 (trapped, ignored), then SIGKILL after 1 s
    assert "got USR1" in ok(agent.docker("logs", "stoppy"))
    assert inspect(agent, "stoppy")["State"]["ExitCode"] == 137
    before = ok(agent.docker("ps", "-aq")).split()
    fails(agent.docker("create", "--stop-signal", "NOPE", "busybox"), "Invalid signal: NOPE")
    assert ok(agent.docker("ps", "-aq")).split() == before
    ok(agent.docker("rm", "stoppy"))
