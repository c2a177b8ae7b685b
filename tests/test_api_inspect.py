"""Inspect answers carry every field dockerd's do, with dockerd's zero values where the engine
sets nothing (tests/golden/dockerd-inspect.json is dockerd 20.10's own answer, API 1.41)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import docker
import pytest
from agentserver import serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")
DOCKERD = json.loads((Path(__file__).parent / "golden" / "dockerd-inspect.json").read_text())
# Objects whose keys are data (labels, networks by name, driver paths), not fields.
MAPS = {"Labels", "Networks", "Data", "Ports", "Config.Config", "LogConfig.Config"}


@pytest.fixture(scope="module")
def api(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-inspect"), registry) as server:
        client = docker.APIClient(base_url=server.url, version="auto", timeout=60)
        client.pull("busybox", tag="latest")
        yield client
        client.close()


def fields(value, prefix: str = "") -> set[str]:
    """Every field's dotted path (an object that is a map counts as one field)."""
    if not isinstance(value, dict) or prefix.rpartition(".")[2] in MAPS:
        return {prefix}
    paths = {prefix} if prefix else set()
    for key, child in value.items():
        paths |= fields(child, f"{prefix}.{key}" if prefix else key)
    return paths


def test_container_inspect_has_every_field_of_dockerds(api):
    container = api.create_container("busybox", ["sleep", "100"])
    api.start(container)
    ours = api.inspect_container(container)
    assert sorted(fields(DOCKERD["container"]) - fields(ours)) == []
    host, zero = ours["HostConfig"], DOCKERD["container"]["HostConfig"]
    for name in ("CpuShares", "CpusetCpus", "Dns", "VolumesFrom", "ShmSize", "IpcMode", "Links"):
        assert host[name] == zero[name], name
    assert host["Init"] is None and host["Tmpfs"] is None and host["PidsLimit"] is None
    assert ours["Config"]["Domainname"] == "" and ours["Config"]["Volumes"] is None
    assert "Health" not in ours["State"] and "StopTimeout" not in ours["Config"]  # as dockerd
    assert host["Isolation"] == ""
    isolated = api.create_container("busybox", ["true"], host_config={"Isolation": "default"})
    assert api.inspect_container(isolated)["HostConfig"]["Isolation"] == "default"
    api.remove_container(isolated)
    exec_id = api.exec_create(container, ["true"])["Id"]
    assert api.inspect_container(container)["ExecIDs"] == [exec_id]
    assert sorted(fields(DOCKERD["exec"]) - fields(api.exec_inspect(exec_id))) == []
    api.remove_container(container, force=True)


def test_image_inspect_has_every_field_of_dockerds(api):
    ours = api.inspect_image("busybox")
    missing = fields(DOCKERD["image"]) - fields(ours)
    assert sorted(missing) == []
    assert ours["Config"]["Domainname"] == "" and ours["VirtualSize"] == ours["Size"]


def test_a_bare_env_name_is_kept_as_given_and_means_unset(api):
    env = {"Foo": None, "Other": "one", "Blank": "", "QT_QPA_PLATFORM": None}  # (the agent's)
    container = api.create_container("busybox", ["env"], environment=env)
    config_env = api.inspect_container(container)["Config"]["Env"]
    assert config_env[:4] == ["Foo", "Other=one", "Blank=", "QT_QPA_PLATFORM"]
    assert any(e.startswith("PATH=") for e in config_env)  # the image's, not overridden
    api.start(container)
    api.wait(container)
    seen = api.logs(container).decode().splitlines()
    assert "Other=one" in seen and "Blank=" in seen
    assert not [e for e in seen if e.startswith(("Foo", "QT_QPA_PLATFORM"))]
    api.remove_container(container)


def test_sizes_are_given_when_asked(api):
    container = api.create_container("busybox", ["sh", "-c", "head -c 100000 /dev/zero > /big"])
    api.start(container)
    api.wait(container)
    url = api._url("/containers/{0}/json", container["Id"])
    sized = api._result(api._get(url, params={"size": 1}), json=True)
    image_size = api.inspect_image("busybox")["Size"]
    assert sized["SizeRw"] >= 100000 and sized["SizeRootFs"] == sized["SizeRw"] + image_size
    assert "SizeRw" not in api.inspect_container(container)
    (row,) = [r for r in api.containers(all=True, size=True) if r["Id"] == container["Id"]]
    assert (row["SizeRw"], row["SizeRootFs"]) == (sized["SizeRw"], sized["SizeRootFs"])
    assert "SizeRw" not in api.containers(all=True)[0]
    api.remove_container(container)
