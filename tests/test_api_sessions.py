"""Kill, attach, exec as dockerd answers them, seen from docker-py and the docker CLI: a kill
answered once it has happened, detach keys that end a session and leave the container running,
exec output framed as the start asked, and an exec whose command cannot start."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import docker
import pytest
from agentserver import serving
from vmctl_agent.api import detachkeys
from vmctl_agent.api.http import ApiError
from vmctl_agent.runtime.cgroupfs import cpu_weight

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-sessions"), registry) as server:
        assert server.docker("pull", "busybox").returncode == 0
        yield server


@pytest.fixture(scope="module")
def api(agent):
    client = docker.APIClient(base_url=agent.url, version="auto", timeout=60)
    yield client
    client.close()


@pytest.fixture
def cat(api):
    """A running `cat` with stdin open: it echoes what a session sends it."""
    container = api.create_container("busybox", "cat", stdin_open=True)
    api.start(container)
    yield container["Id"]
    api.remove_container(container, force=True)


def _until_eof(sock: socket.socket) -> bytes:
    """Everything the engine sends until it ends the session (a hang fails by timeout)."""
    sock.settimeout(60)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


# -- kill --------------------------------------------------------------------------------------


def test_a_sigkill_is_answered_once_the_exit_is_recorded(api, agent):
    for _ in range(5):  # each round on its own: inspect and remove come right after the kill
        container = api.create_container("busybox", ["sleep", "300"])
        api.start(container)
        api.kill(container)
        state = api.inspect_container(container)["State"]
        assert (state["Status"], state["Running"], state["ExitCode"]) == ("exited", False, 137)
        api.remove_container(container)
    assert agent.docker("run", "-d", "--name", "killed", "busybox", "sleep", "300").returncode == 0
    assert agent.docker("kill", "killed").returncode == 0
    removed = agent.docker("rm", "killed")
    assert removed.returncode == 0, removed.stderr


def test_other_signals_are_delivered_and_answered_at_once(api):
    script = 'trap "echo got USR1; exit 3" USR1; echo ready; while :; do sleep 1; done'
    container = api.create_container("busybox", ["sh", "-c", script])
    api.start(container)
    logs = api.logs(container, stream=True, follow=True)
    assert next(logs) == b"ready\n"  # the trap is set
    api.kill(container, "SIGUSR1")
    assert api.wait(container)["StatusCode"] == 3
    assert api.logs(container) == b"ready\ngot USR1\n"
    api.remove_container(container)


def test_kill_of_a_container_not_running_is_a_409(api):
    container = api.create_container("busybox", ["true"])
    with pytest.raises(docker.errors.APIError) as refused:
        api.kill(container)
    assert refused.value.status_code == 409 and "is not running" in str(refused.value)
    api.remove_container(container)


def test_stop_signal_and_stop_timeout_given_at_create(api, agent):
    script = 'trap "echo got USR1; exit 3" USR1; echo ready; while :; do sleep 1; done'
    run = agent.docker(
        "run", "-d", "--stop-signal", "USR1", "--stop-timeout", "30", "busybox", "sh", "-c",
        script,
    )  # fmt: skip
    cid = run.stdout.strip()
    assert run.returncode == 0, run.stderr
    config = api.inspect_container(cid)["Config"]
    assert (config["StopSignal"], config["StopTimeout"]) == ("USR1", 30)
    assert next(api.logs(cid, stream=True, follow=True)) == b"ready\n"
    assert agent.docker("stop", cid).returncode == 0
    assert api.wait(cid)["StatusCode"] == 3 and api.logs(cid) == b"ready\ngot USR1\n"
    unset = api.inspect_container(api.create_container("busybox", ["true"]))["Config"]
    assert "StopSignal" not in unset and "StopTimeout" not in unset
    with pytest.raises(docker.errors.APIError, match="Invalid signal: SIGNOPE"):
        api.create_container("busybox", ["true"], stop_signal="SIGNOPE")
    api.remove_container(cid)


def test_stop_with_a_signal_of_its_own(api, agent):
    script = 'trap "echo got USR2; exit 4" USR2; echo ready; while :; do sleep 1; done'
    container = api.create_container("busybox", ["sh", "-c", script])
    api.start(container)
    assert next(api.logs(container, stream=True, follow=True)) == b"ready\n"
    stopped = agent.docker("stop", "--signal", "USR2", container["Id"])
    assert stopped.returncode == 0, stopped.stderr
    assert api.wait(container)["StatusCode"] == 4
    refused = agent.docker("stop", "--signal", "NOPE", container["Id"])
    assert "Invalid signal: NOPE" in refused.stderr
    api.remove_container(container)


def test_top_says_it_cannot_take_ps_args(api, agent, cat):
    refused = agent.docker("top", cat, "aux")
    assert refused.returncode == 1
    assert "ps_args other than -ef are not supported by this engine yet" in refused.stderr
    assert agent.docker("top", cat, "-ef").returncode == 0


# -- detach keys -------------------------------------------------------------------------------


def test_detach_keys_spelled_as_docker_spells_them():
    assert detachkeys.parse("") == b"\x10\x11"  # ctrl-p,ctrl-q
    assert detachkeys.parse("ctrl-a,b,ctrl-@,ctrl-_,DEL") == b"\x01b\x00\x1f\x7f"
    for bad in ("ctrl-1", "ctrl-", "ab", "ctrl-p,,ctrl-q"):
        with pytest.raises(ApiError, match=re.escape(f"Invalid detach keys ({bad}) provided")):
            detachkeys.parse(bad)


def test_the_scanner_holds_back_a_prefix_and_never_forwards_the_keys():
    scanner = detachkeys.Scanner(b"\x10\x11", tty=True)
    assert scanner.feed(b"ab\x10") == b"ab"  # maybe the keys: held
    assert scanner.feed(b"x") == b"\x10x"  # not them: forwarded after all
    assert scanner.feed(b"\x10") == b"" and scanner.feed(b"\x11rest") == b""
    assert scanner.detached
    without_terminal = detachkeys.Scanner(b"\x10\x11", tty=False)
    assert without_terminal.feed(b"\x10\x11") == b"\x10\x11" and not without_terminal.detached


@pytest.fixture
def terminal_cat(api):
    container = api.create_container("busybox", "cat", stdin_open=True, tty=True)
    api.start(container)
    yield container["Id"]
    api.remove_container(container, force=True)


@pytest.mark.parametrize(("keys", "typed"), [(None, b"\x10\x11"), ("ctrl-a,b", b"\x01b")])
def test_detach_keys_end_a_terminal_attach_and_the_container_runs_on(
    api, terminal_cat, keys, typed
):
    params = {"stdin": 1, "stdout": 1, "stream": 1, **({"detachKeys": keys} if keys else {})}
    sock = api.attach_socket(terminal_cat, params=params)._sock
    sock.sendall(typed + b"never\n")  # nothing after the keys reaches the container
    assert b"never" not in _until_eof(sock)
    assert api.inspect_container(terminal_cat)["State"]["Running"] is True
    sock.close()


def test_without_a_terminal_the_keys_are_data(api, cat):
    sock = api.attach_socket(cat, params={"stdin": 1, "stdout": 1, "stream": 1})._sock
    sock.sendall(b"a\x10\x11b\n")
    assert sock.recv(64) == b"\x01\0\0\0\0\0\0\x05a\x10\x11b\n"
    sock.close()


def test_exec_detach_keys_end_a_terminal_exec_and_it_runs_on(api, cat):
    made = api.exec_create(cat, "cat", stdin=True, tty=True, detach_keys="ctrl-x")
    sock = api.exec_start(made, tty=True, socket=True)._sock
    sock.sendall(b"\x18never\n")
    assert b"never" not in _until_eof(sock)
    inspected = api.exec_inspect(made)
    assert (inspected["Running"], inspected["DetachKeys"]) == (True, "ctrl-x")
    assert api.inspect_container(cat)["State"]["Running"] is True
    commands = [row[-1] for row in api.top(cat)["Processes"]]  # the exec's helper is not one
    assert commands == ["cat", "cat"]


def test_the_cli_detaches_with_its_detach_keys(agent, terminal_cat):
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_CONFIG": str(agent.workdir)}
    cmd = f"docker attach --detach-keys ctrl-a,b {terminal_cat}"
    run = subprocess.run(
        [shutil.which("script"), "-qec", cmd, "/dev/null"],
        input="\x01b", capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert "read escape sequence" in run.stdout + run.stderr
    assert agent.docker("inspect", "-f", "{{.State.Running}}", terminal_cat).stdout == "true\n"


def test_invalid_detach_keys_are_refused_in_dockers_words(api, cat):
    with pytest.raises(docker.errors.APIError, match=r"Invalid detach keys \(ctrl-1\) provided"):
        api.attach_socket(cat, params={"stdin": 1, "stream": 1, "detachKeys": "ctrl-1"})
    with pytest.raises(docker.errors.APIError, match=r"Invalid detach keys \(ctrl-\) provided"):
        api.exec_create(cat, "cat", detach_keys="ctrl-")


# -- exec output and failures -------------------------------------------------------------------


def test_exec_output_is_framed_as_the_start_body_says(api, cat):
    with_tty = api.exec_create(cat, ["echo", "0123456789"], tty=True)
    assert api.exec_start(with_tty, tty=False) == b"0123456789\r\n"  # multiplexed, whole
    without = api.exec_create(cat, ["sh", "-c", "echo out; echo err >&2"])
    assert api.exec_start(without, tty=True) in (b"out\nerr\n", b"err\nout\n")  # raw
    assert api.exec_start(api.exec_create(cat, ["echo", "x"]), demux=True) == (b"x\n", None)


@pytest.mark.parametrize(
    ("cmd", "code", "why"),
    [
        ("nosuch", 127, 'exec: "nosuch": executable file not found in $PATH'),
        ("/no/such", 127, 'exec: "/no/such": stat /no/such: no such file or directory'),
        ("/etc/passwd", 126, 'exec: "/etc/passwd": permission denied'),
    ],
)
def test_an_exec_whose_command_cannot_start(api, agent, cat, cmd, code, why):
    made = api.exec_create(cat, [cmd])
    out = api.exec_start(made)
    assert (
        out
        == (
            f"OCI runtime exec failed: exec failed: unable to start container process: {why}"
            ": unknown\r\n"
        ).encode()
    )
    inspected = api.exec_inspect(made)
    assert (inspected["Running"], inspected["ExitCode"]) == (False, code)
    with pytest.raises(docker.errors.APIError) as again:
        api.exec_start(made)
    assert again.value.status_code == 409
    cli = agent.docker("exec", cat, cmd)
    assert cli.returncode == code and why in cli.stdout + cli.stderr
    assert api.inspect_container(cat)["State"]["Running"] is True


def test_an_attach_without_stream_gives_what_is_logged_already(api):
    container = api.create_container("busybox", ["echo", "hello"])
    api.start(container)
    api.wait(container)
    assert api.attach(container, logs=True, stream=False) == b"hello\n"
    assert api.attach(container, logs=False, stream=False) == b""
    api.remove_container(container)


def test_an_exec_cmd_given_as_a_string_is_one_argument(api, cat):
    url = api._url("/containers/{0}/exec", cat)
    made = api._result(api._post_json(url, data={"Cmd": "pwd", "AttachStdout": True}), True)
    assert api.exec_start(made["Id"]) == b"/\n"
    assert api.exec_inspect(made["Id"])["ProcessConfig"]["entrypoint"] == "pwd"


def test_an_exec_env_bare_name_unsets_it(api):
    container = api.create_container("busybox", "cat", stdin_open=True, environment=["A=1"])
    api.start(container)
    made = api.exec_create(container, ["env"], environment=["A", "B=2", "C="])
    seen = api.exec_start(made).decode().splitlines()
    assert "B=2" in seen and "C=" in seen and not [e for e in seen if e.startswith("A=")]
    api.remove_container(container, force=True)


def test_group_add_by_id_or_name_for_the_process_and_its_execs(api, agent):
    run = agent.docker(
        "run", "--rm", "--group-add", "1000", "--group-add", "nobody", "busybox", "id", "-G"
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0", "1000", "65534"]
    unknown = agent.docker("run", "--rm", "--group-add", "nosuch", "busybox", "true")
    assert unknown.returncode == 125
    assert "unable to find group nosuch: no matching entries in group file" in unknown.stderr
    host = api.create_host_config(group_add=[1000])
    container = api.create_container("busybox", "cat", stdin_open=True, host_config=host)
    assert api.inspect_container(container)["HostConfig"]["GroupAdd"] == ["1000"]
    api.start(container)
    made = api.exec_create(container, ["id", "-G"], user="nobody")
    assert api.exec_start(made).split() == [b"65534", b"1000"]  # its own group first
    api.remove_container(container, force=True)


def test_cpu_shares_reach_the_containers_cgroup(api, agent):
    cid = agent.docker("run", "-d", "--cpu-shares", "512", "busybox", "sleep", "300").stdout
    cid = cid.strip()
    assert api.inspect_container(cid)["HostConfig"]["CpuShares"] == 512
    v1 = list(Path("/sys/fs/cgroup/cpu").glob(f"*/{cid}/cpu.shares"))
    v2 = list(Path("/sys/fs/cgroup").glob(f"*/{cid}/cpu.weight"))
    assert [f.read_text().strip() for f in v1 + v2] == ["512" if v1 else str(cpu_weight(512))]
    refused = agent.docker("run", "--rm", "--cpu-shares", "-5", "busybox", "true")
    assert refused.returncode == 125 and "Invalid CPU shares -5" in refused.stderr
    api.remove_container(cid, force=True)
