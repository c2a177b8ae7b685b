"""Create fields the engine does not honour are refused with a 400 naming them, never dropped;
their zero values (which the docker CLI, compose and docker-py always send) are accepted."""

from __future__ import annotations

import os

import docker
import pytest
from agentserver import serving
from vmctl_agent.api.http import ApiError
from vmctl_agent.api.unsupported import CREATE_FIELDS, check_create, is_zero

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-refusals"), registry) as server:
        assert server.docker("pull", "busybox").returncode == 0
        yield server


def _body_with(path: str, value) -> dict:
    """A create body with `value` at the dotted `path` (Config.* is the body itself)."""
    keys = path.split(".")
    body: dict = {"Image": "busybox"}
    node = body if keys[0] == "Config" else body.setdefault(keys[0], {})
    for key in keys[1:-1]:
        node = node.setdefault("none" if key == "*" else key, {})
    node["none" if keys[-1] == "*" else keys[-1]] = value
    return body


@pytest.mark.parametrize("path", [row[0] for row in CREATE_FIELDS])
def test_each_field_not_honoured_is_refused_by_name(path):
    text = "syslog" if path.endswith("LogConfig.Type") else "x"  # "x": an unknown driver
    for value in (text, 7, True, ["x"], {"x": "y"}):
        with pytest.raises(ApiError) as refused:
            check_create(_body_with(path, value))
        assert refused.value.status == 400
        named = path.replace("*", "none")  # the endpoint's network, by name
        assert str(refused.value).startswith(f"{named} is not supported by this engine yet (")


@pytest.mark.parametrize("path", [row[0] for row in CREATE_FIELDS])
def test_each_fields_zero_value_is_accepted(path):
    for zero in (None, False, 0, "", [], {}):
        check_create(_body_with(path, zero))


def test_zero_values_and_what_the_engine_does_anyway_pass():
    assert is_zero({}) and not is_zero({"/run": ""}) and not is_zero([""])
    check_create(
        {
            "Image": "busybox",
            "Healthcheck": {"Test": ["NONE"]},
            "HostConfig": {
                "Binds": [],
                "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
                "LogConfig": {"Type": "json-file", "Config": {}},
                "MemorySwap": -1,
                "IpcMode": "private",
                "SecurityOpt": ["no-new-privileges:true", "seccomp=unconfined"],
            },
            "NetworkingConfig": {"EndpointsConfig": {"none": {"Aliases": None, "Links": []}}},
            "Volumes": {},
        }
    )


def test_log_drivers_unknown_and_not_yet_supported():
    with pytest.raises(ApiError, match=r"^logger: no log driver named 'asdf' is registered$"):
        check_create({"HostConfig": {"LogConfig": {"Type": "asdf"}}})
    with pytest.raises(ApiError, match=r"^HostConfig.LogConfig.Type is not supported .*driver"):
        check_create({"HostConfig": {"LogConfig": {"Type": "syslog"}}})
    with pytest.raises(ApiError, match=r"^HostConfig.SecurityOpt 'apparmor=mine' is not"):
        check_create({"HostConfig": {"SecurityOpt": ["apparmor=mine"]}})


REFUSED_FLAGS = [
    (["--log-driver", "syslog"], "HostConfig.LogConfig.Type"),
    (["--link", "other:db"], "HostConfig.Links"),
    (["--domainname", "example.com"], "Config.Domainname"),
]


@pytest.mark.parametrize(("flags", "field"), REFUSED_FLAGS, ids=[f[1] for f in REFUSED_FLAGS])
def test_docker_run_with_a_flag_not_honoured_says_so_and_leaves_nothing(agent, flags, field):
    before = sorted(os.listdir(agent.data_root / "containers"))
    run = agent.docker("run", *flags, "busybox", "true")
    assert run.returncode == 125
    assert f"Error response from daemon: {field} is not supported by this engine yet" in (
        run.stderr
    )
    assert sorted(os.listdir(agent.data_root / "containers")) == before
    assert agent.docker("ps", "-aq").stdout == ""


def test_an_unknown_log_driver_is_dockers_error(agent):
    run = agent.docker("run", "--rm", "--log-driver", "nope", "busybox", "true")
    assert run.returncode == 125
    assert "logger: no log driver named 'nope' is registered" in run.stderr


def test_docker_run_with_common_flags_still_works(agent):
    run = agent.docker(
        "run", "--rm", "-i", "-e", "A=1", "-w", "/srv", "-u", "0:0", "--name", "common",
        "--hostname", "h1", "-l", "k=v", "-m", "64m", "--cpus", "1", "--pids-limit", "50",
        "--cap-drop", "CHOWN", "--cap-add", "NET_ADMIN", "--security-opt", "no-new-privileges",
        "--network", "none", "--restart", "no", "--log-driver", "json-file",
        "--stop-timeout", "0", "busybox", "sh", "-c", "echo $A $(pwd) $(hostname)",
        input="",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout == "1 /srv h1\n"


def test_docker_py_defaults_and_zero_values_are_accepted(agent):
    client = docker.DockerClient(base_url=agent.url, version="auto", timeout=60)
    out = client.containers.run("busybox", ["echo", "ok"], remove=True)
    assert out == b"ok\n"
    api = client.api
    host = api.create_host_config(
        binds=[], restart_policy={"Name": ""}, log_config={"Type": "", "Config": {}}
    )
    created = api.create_container("busybox", ["true"], host_config=host)
    info = api.inspect_container(created["Id"])
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    api.remove_container(created["Id"])
    with pytest.raises(docker.errors.APIError) as refused:
        client.containers.run("busybox", ["true"], oom_score_adj=5, remove=True)
    assert refused.value.status_code == 400
    assert "HostConfig.OomScoreAdj is not supported" in str(refused.value)


def test_swarm_endpoints_answer_as_a_node_outside_a_swarm(agent):
    client = docker.APIClient(base_url=agent.url, version="auto", timeout=60)
    assert client.leave_swarm(force=True) is True  # docker-py's tidy-up after network tests
    with pytest.raises(docker.errors.APIError) as outside:
        client.inspect_swarm()
    assert outside.value.status_code == 503 and "not a swarm manager" in str(outside.value)
    services = agent.docker("service", "ls")
    assert services.returncode == 1 and "This node is not a swarm manager" in services.stderr
    init = agent.docker("swarm", "init")
    assert init.returncode == 1 and "swarm mode is not supported by this engine" in init.stderr


def test_a_start_with_a_body_is_refused_as_dockerd_does(agent):
    client = docker.APIClient(base_url=agent.url, version="auto", timeout=60)
    container = client.create_container("busybox", ["true"])
    url = client._url("/containers/{0}/start", container["Id"])
    answer = client._post_json(url, data={"Binds": ["/tmp:/data"]})
    assert answer.status_code == 400
    assert "non-empty request body was deprecated since API v1.22" in answer.json()["message"]
    assert client.inspect_container(container)["State"]["Status"] == "created"
    assert client._post_json(url, data={}).status_code == 204
    client.remove_container(container, force=True)


def test_malformed_create_fields_are_a_400_not_a_500(agent):
    client = docker.APIClient(base_url=agent.url, version="auto", timeout=60)
    for body in (
        {"Image": "busybox", "HostConfig": ["not", "an", "object"]},
        {"Image": "busybox", "HostConfig": {"SecurityOpt": [7]}},
        {"Image": "busybox", "HostConfig": {"LogConfig": "json-file"}},
    ):
        answer = client._post_json(client._url("/containers/create"), data=body)
        assert answer.status_code == 400, body
        assert answer.json()["message"].startswith("invalid container configuration: ")
