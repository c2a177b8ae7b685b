"""The container lifecycle beyond run and stop, with the real docker CLI and docker-py against
`vmctl-agent serve`: restart policies (and what comes back when the agent starts again),
healthchecks."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import docker
import imagekit as ik
import pytest
from agentserver import AgentServer, events, inspect, ok, serving, until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    push_checked_image(registry)
    with serving(tmp_path_factory.mktemp("agent-life"), registry) as server:
        assert server.docker("pull", "busybox").returncode == 0
        yield server


def push_checked_image(registry) -> None:
    """`checked`: busybox whose HEALTHCHECK passes once /tmp/ok exists, probed every 50 ms."""
    layer = ik.busybox_layer(sorted(ik.busybox_applets() - {"busybox"}))
    config = {
        "Cmd": ["sleep", "1000"],
        "Env": [ik.DEFAULT_PATH],
        "Healthcheck": {"Test": ["CMD-SHELL", "test -e /tmp/ok"], "Interval": 50 * 10**6},
    }
    checked = ik.build_image([layer], config=config)
    ik.RegistryClient(registry.url).push_image("library/checked", "latest", checked)


def names(agent: AgentServer) -> set[str]:
    return set(ok(agent.docker("ps", "-a", "--format", "{{.Names}}")).split())


# -- restart policies ----------------------------------------------------------------------------


def test_bad_restart_policies_are_refused_and_nothing_is_made(agent):
    before = names(agent)
    refused = {
        "sometimes": "invalid restart policy: unknown policy 'sometimes'; use one of 'no', "
        "'always', 'on-failure', or 'unless-stopped'",
        "on-failure:-1": "invalid restart policy: maximum retry count cannot be negative",
        "always:3": "invalid restart policy: maximum retry count can only be used with "
        "'on-failure'",
    }
    for policy, message in refused.items():
        result = agent.docker("create", "--restart", policy, "busybox", "true")
        assert result.returncode != 0 and message in result.stderr, result.stderr
    client = docker.APIClient(base_url=agent.url, version="auto")
    host = client.create_host_config(auto_remove=True, restart_policy={"Name": "always"})
    with pytest.raises(docker.errors.APIError) as conflict:
        client.create_container("busybox", ["true"], host_config=host)
    assert conflict.value.status_code == 400
    assert "can't create 'AutoRemove' container with restart policy" in str(conflict.value)
    assert names(agent) == before


def test_on_failure_restarts_n_times_with_the_back_off_and_events(agent):
    since = time.time() - 1
    ok(
        agent.docker(
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:3",
            "busybox",
            "sh",
            "-c",
            "echo run; exit 3",
        )
    )

    def given_up():
        state = inspect(agent, "flaky")
        return state["State"]["Status"] == "exited" and state["RestartCount"] == 3 and state

    info = until(given_up, "three restarts, then exited")
    assert info["State"]["ExitCode"] == 3 and not info["State"]["Restarting"]
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert ok(agent.docker("logs", "flaky")).split() == ["run"] * 4
    seen = until(lambda: (e := events(agent, "flaky", since)) and len(e) >= 9 and e, "events")
    actions = [e["Action"] for e in seen]
    assert actions == ["create", "start"] + ["die", "start"] * 3 + ["die"]
    times = [e["timeNano"] / 1e9 for e in seen]
    gaps = [times[i + 1] - times[i] for i in range(2, 8, 2)]  # each die to its next start
    assert [g >= d for g, d in zip(gaps, (0.1, 0.2, 0.4), strict=True)] == [True] * 3, gaps
    ok(agent.docker("rm", "flaky"))


def test_restarting_shows_in_ps_and_a_stop_ends_it_for_good(agent):
    ok(agent.docker("run", "-d", "--name", "looping", "--restart", "always", "busybox", "true"))

    def restarting():  # after 5 restarts: the next waits 3.2 s, time enough to look at it
        line = ok(agent.docker("ps", "--filter", "name=looping", "--format", "{{.Status}}"))
        info = line.startswith("Restarting (0)") and inspect(agent, "looping")
        return info and info["RestartCount"] >= 5 and info["State"]["Restarting"] and info

    info = until(restarting, "`docker ps` to say Restarting")
    assert info["State"]["Status"] == "restarting"
    assert info["State"]["Restarting"] and info["State"]["Running"] and info["State"]["Pid"] == 0
    refused = agent.docker("rm", "looping")
    assert "You cannot remove a restarting container" in refused.stderr
    pruned = ok(agent.docker("container", "prune", "-f"))
    assert info["Id"] not in pruned and "looping" in names(agent)  # not stopped: kept
    ok(agent.docker("stop", "looping"))
    stopped = inspect(agent, "looping")
    assert stopped["State"]["Status"] == "exited" and not stopped["State"]["Restarting"]
    count = stopped["RestartCount"]
    time.sleep(1)  # longer than any delay it had pending: nothing may start it again
    assert inspect(agent, "looping")["RestartCount"] == count
    assert inspect(agent, "looping")["State"]["Status"] == "exited"
    ok(agent.docker("start", "looping"))  # a user's start: counted from 0 again
    until(lambda: inspect(agent, "looping")["RestartCount"] >= 1, "restarts after a start")
    ok(agent.docker("rm", "-f", "looping"))
    assert "looping" not in names(agent)


def test_an_end_a_wait_reported_is_already_a_restart_remove_refuses(agent):
    """dockerd decides on the restart before it tells a waiter of the end: a remove right
    after `docker wait` (docker-py's test_create_with_restart_policy) meets a container that is
    restarting or running again, never one it may delete."""
    for attempt in range(5):
        name = f"comes-back-{attempt}"
        ok(agent.docker("run", "-d", "--name", name, "--restart", "always", "busybox", "true"))
        ok(agent.docker("wait", name))
        refused = agent.docker("rm", name)
        assert refused.returncode != 0 and "You cannot remove a " in refused.stderr, refused
        ok(agent.docker("rm", "-f", name))


def test_a_docker_restart_and_a_kill_hold_an_always_container_as_dockerd_does(agent):
    ok(
        agent.docker(
            "run", "-d", "--name", "kept", "--restart", "always", "busybox", "sleep", "1000"
        )
    )
    ok(agent.docker("restart", "-t", "1", "kept"))
    info = inspect(agent, "kept")
    assert info["State"]["Running"] and info["RestartCount"] == 0
    ok(agent.docker("kill", "kept"))
    until(lambda: inspect(agent, "kept")["State"]["Status"] == "exited", "the kill")
    time.sleep(0.5)  # longer than the first back-off: a killed container stays down
    assert inspect(agent, "kept")["State"]["Status"] == "exited"
    ok(agent.docker("rm", "kept"))


def test_docker_py_reads_the_policy_and_the_count(agent):
    client = docker.DockerClient(base_url=agent.url, version="auto")
    policy = {"Name": "on-failure", "MaximumRetryCount": 1}
    c = client.containers.run("busybox", ["false"], detach=True, restart_policy=policy)
    until(lambda: c.reload() or (c.status == "exited" and c.attrs["RestartCount"] == 1), "1")
    assert c.attrs["HostConfig"]["RestartPolicy"] == policy
    c.remove()


# -- what comes back when the agent starts again ---------------------------------------------------


def _kill_agent(agent: AgentServer) -> None:
    agent.process.send_signal(signal.SIGKILL)
    agent.process.wait(timeout=30)
    agent.socket.unlink()  # left behind: the next agent's readiness is its new socket


def _state(agent: AgentServer, container_id: str) -> dict:
    return json.loads((agent.data_root / "containers" / container_id / "state.json").read_text())


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or " Z " in Path(f"/proc/{pid}/stat").read_text()


def test_the_policies_bring_back_what_ran_after_the_vm_went_down(tmp_path, registry):
    """Agent, shims and containers all killed at once (a VM's power cut): the next agent
    starts `always` and `unless-stopped` containers, and leaves the stopped ones down."""
    with serving(tmp_path, registry) as first:
        run = {
            "always": "always",
            "unless": "unless-stopped",
            "plain": "no",
            "held": "unless-stopped",
            "failing": "on-failure",
        }
        for name, policy in run.items():
            ok(
                first.docker(
                    "run", "-d", "--name", name, "--restart", policy, "busybox", "sleep", "1000"
                )
            )
        ok(first.docker("stop", "-t", "0", "held"))
        ids = {name: inspect(first, name)["Id"] for name in run}
        _kill_agent(first)
        for name in ("always", "unless", "plain", "failing"):
            state = _state(first, ids[name])
            os.kill(state["shim_pid"], signal.SIGKILL)
            os.kill(state["pid"], signal.SIGKILL)
            until(lambda s=state: _gone(s["shim_pid"]) and _gone(s["pid"]), f"{name} killed")
        second = AgentServer(tmp_path, registry)
        first.process = second.process
        for name in ("always", "unless", "failing"):
            until(lambda n=name: inspect(second, n)["State"]["Running"], f"{name} back")
            top = ok(second.docker("top", name))
            assert top.count("sleep 1000") == 1, top
        for name in ("plain", "held"):
            assert inspect(second, name)["State"]["Status"] == "exited"
        assert inspect(second, "plain")["State"]["ExitCode"] == 137


def test_an_agent_killed_between_a_death_and_its_restart_brings_it_back_once(tmp_path, registry):
    with serving(tmp_path, registry) as first:
        ok(
            first.docker(
                "run",
                "-d",
                "--name",
                "once",
                "--restart",
                "always",
                "busybox",
                "sh",
                "-c",
                "echo started; exec sleep 1000",
            )
        )
        until(lambda: "started" in ok(first.docker("logs", "once")), "the first run")
        state = _state(first, inspect(first, "once")["Id"])
        _kill_agent(first)
        os.kill(state["pid"], signal.SIGKILL)  # dies while no agent runs: its shim records it
        until(lambda: _gone(state["shim_pid"]), "the shim to record the end")
        since = time.time()
        second = AgentServer(tmp_path, registry)
        first.process = second.process
        until(lambda: inspect(second, "once")["State"]["Running"], "the restart")
        until(lambda: ok(second.docker("logs", "once")).split().count("started") == 2, "logs")
        assert ok(second.docker("top", "once")).count("sleep 1000") == 1
        starts = [e for e in events(second, "once", since) if e["Action"] == "start"]
        assert len(starts) == 1
        assert ok(second.docker("logs", "once")).split() == ["started", "started"]


# -- healthchecks --------------------------------------------------------------------------------


def _health(agent: AgentServer, name: str) -> dict:
    return inspect(agent, name)["State"].get("Health") or {}


def _listed(agent: AgentServer, health: str) -> list[str]:
    out = agent.docker("ps", "--filter", f"health={health}", "--format", "{{.Names}}")
    return ok(out).split()


def test_health_from_run_options_goes_unhealthy_then_healthy(agent):
    since = time.time() - 1
    ok(
        agent.docker(
            "run",
            "-d",
            "--name",
            "probed",
            "--health-cmd",
            "cat /tmp/ok || exit 1",
            "--health-interval",
            "50ms",
            "--health-retries",
            "2",
            "--health-timeout",
            "5s",
            "busybox",
            "sleep",
            "1000",
        )
    )
    unhealthy = until(
        lambda: (h := _health(agent, "probed"))["Status"] == "unhealthy" and h, "unhealthy"
    )
    assert unhealthy["FailingStreak"] >= 2 and 2 <= len(unhealthy["Log"]) <= 5
    last = unhealthy["Log"][-1]
    assert last["ExitCode"] == 1 and "No such file or directory" in last["Output"]
    assert last["Start"] <= last["End"]
    assert "(unhealthy)" in ok(
        agent.docker("ps", "--filter", "name=probed", "--format", "{{.Status}}")
    )
    assert "probed" in _listed(agent, "unhealthy") and "probed" not in _listed(agent, "healthy")
    ok(agent.docker("exec", "probed", "sh", "-c", "echo fine > /tmp/ok"))
    until(lambda: _health(agent, "probed")["Status"] == "healthy", "healthy")
    healthy = _health(agent, "probed")
    assert healthy["FailingStreak"] == 0 and healthy["Log"][-1]["Output"] == "fine\n"
    assert "probed" in _listed(agent, "healthy") and "probed" not in _listed(agent, "unhealthy")
    status = ok(agent.docker("ps", "--filter", "name=probed", "--format", "{{.Status}}"))
    assert status.strip().endswith("(healthy)")
    actions = [e["Action"] for e in events(agent, "probed", since)]
    health_events = [a for a in actions if a.startswith("health_status")]
    assert health_events == ["health_status: unhealthy", "health_status: healthy"]
    filtered = agent.docker(
        "events",
        "--since",
        f"{since:.3f}",
        "--until",
        f"{time.time():.3f}",
        "--filter",
        "container=probed",
        "--filter",
        "event=health_status",
        "--format",
        "{{.Action}}",
    )
    assert ok(filtered).splitlines() == health_events  # dockerd's prefix match
    config = inspect(agent, "probed")["Config"]["Healthcheck"]
    assert config["Test"] == ["CMD-SHELL", "cat /tmp/ok || exit 1"] and config["Retries"] == 2
    ok(agent.docker("rm", "-f", "probed"))


def test_the_images_healthcheck_and_no_healthcheck(agent):
    ok(agent.docker("run", "-d", "--name", "from-image", "checked"))
    ok(agent.docker("run", "-d", "--name", "unchecked", "--no-healthcheck", "checked"))
    assert _health(agent, "from-image")["Status"] in ("starting", "unhealthy")
    until(lambda: "from-image" in _listed(agent, "unhealthy"), "three failures: unhealthy")
    ok(agent.docker("exec", "from-image", "touch", "/tmp/ok"))
    until(lambda: _health(agent, "from-image").get("Status") == "healthy", "healthy")
    assert _health(agent, "unchecked") == {} and "unchecked" in _listed(agent, "none")
    assert "Healthcheck" not in inspect(agent, "unchecked")["Config"]
    ok(agent.docker("rm", "-f", "from-image", "unchecked"))


def test_failures_in_the_start_period_do_not_count(agent):
    ok(
        agent.docker(
            "run",
            "-d",
            "--name",
            "warming",
            "--health-cmd",
            "false",
            "--health-retries",
            "1",
            "--health-start-period",
            "1h",
            "--health-start-interval",
            "50ms",
            "--health-interval",
            "1h",
            "busybox",
            "sleep",
            "1000",
        )
    )
    health = until(
        lambda: len((h := _health(agent, "warming")).get("Log", [])) >= 3 and h,
        "three probes, every start interval",
    )
    assert health["Status"] == "starting" and health["FailingStreak"] == 0
    assert [r["ExitCode"] for r in health["Log"]][:3] == [1, 1, 1]
    assert "warming" in _listed(agent, "starting")
    ok(agent.docker("rm", "-f", "warming"))


def test_a_probe_past_its_timeout_is_killed_and_counts_as_a_failure(agent):
    ok(
        agent.docker(
            "run",
            "-d",
            "--name",
            "slow",
            "--health-cmd",
            "sleep 777",
            "--health-timeout",
            "100ms",
            "--health-interval",
            "50ms",
            "--health-retries",
            "1",
            "busybox",
            "sleep",
            "1000",
        )
    )
    until(lambda: _health(agent, "slow").get("Status") == "unhealthy", "unhealthy")
    last = _health(agent, "slow")["Log"][-1]
    assert last["ExitCode"] == -1
    assert last["Output"] == "Health check exceeded timeout (100ms)"
    until(lambda: len(_health(agent, "slow")["Log"]) >= 3, "three timed-out probes")
    assert _processes().count("sleep 777") <= 1  # each killed at its timeout: none pile up
    ok(agent.docker("stop", "-t", "0", "slow"))
    until(lambda: "sleep 777" not in _processes(), "the probes to be gone")
    ok(agent.docker("rm", "slow"))


def _processes() -> str:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return "\n".join(found)


def test_bad_healthchecks_are_refused_and_nothing_is_made(agent):
    before = names(agent)
    result = agent.docker("create", "--health-cmd", "true", "--health-interval", "500us", "busybox")
    assert "Interval in Healthcheck cannot be less than 1ms" in result.stderr, result.stderr
    client = docker.APIClient(base_url=agent.url, version="auto")
    with pytest.raises(docker.errors.APIError) as refused:
        client.create_container(
            "busybox", ["true"], healthcheck={"test": ["CMD", "true"], "retries": -1}
        )
    assert refused.value.status_code == 400
    assert "Retries in Healthcheck cannot be negative" in str(refused.value)
    with pytest.raises(docker.errors.APIError, match="Healthcheck must be a JSON object"):
        client.create_container("busybox", ["true"], healthcheck=["CMD", "true"])
    listed = agent.docker("ps", "--filter", "health=bouncy")
    assert "Unrecognised filter value for health: bouncy" in listed.stderr
    assert names(agent) == before


def test_sigusr1_dumps_every_threads_stack_and_the_engine_serves_on(agent):
    """As dockerd does on SIGUSR1: where each thread is, for a hang in the field."""
    agent.process.send_signal(signal.SIGUSR1)
    # faulthandler writes one thread at a time: the main thread's serve_forever may come
    # after the first "most recent call first" is already on disk.
    until(lambda: "serve_forever" in agent.log.read_text(errors="replace"), "the main thread")
    assert "most recent call first" in agent.log.read_text(errors="replace")
    assert ok(agent.docker("version", "--format", "{{.Server.Os}}")) == "linux\n"
