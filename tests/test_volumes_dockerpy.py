"""docker-py's volumes and mounts against `vmctl-agent serve`: the shapes the SDK reads and
the exceptions it raises from our status codes."""

from __future__ import annotations

import os

import docker
import pytest
from agentserver import serving
from docker.errors import APIError, NotFound
from docker.types import Mount

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def client(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-vol-py"), registry) as server:
        client = docker.DockerClient(base_url=server.url, version="auto", timeout=60)
        client.images.pull("busybox", tag="latest")
        yield client


def test_volume_create_get_list_remove(client):
    volume = client.volumes.create("py-vol", labels={"team": "py"})
    assert volume.attrs["Labels"] == {"team": "py"} and volume.attrs["Driver"] == "local"
    assert client.volumes.get("py-vol").attrs["Mountpoint"].endswith("/volumes/py-vol/_data")
    assert [v.name for v in client.volumes.list(filters={"label": "team=py"})] == ["py-vol"]
    volume.remove()
    with pytest.raises(NotFound, match="no such volume"):
        client.volumes.get("py-vol")


def test_volumes_dict_mounts_and_tmpfs_in_one_run(client, tmp_path):
    (tmp_path / "in").write_text("host\n")
    out = client.containers.run(
        "busybox",
        ["sh", "-c", "cat /h/in; echo v > /v/f; cat /v/f; stat -c %a /t; echo m > /m/f"],
        volumes={str(tmp_path): {"bind": "/h", "mode": "ro"}, "py-run": {"bind": "/v"}},
        mounts=[Mount("/m", None, type="tmpfs", tmpfs_size=1 << 20)],
        tmpfs={"/t": "mode=1700"},
        remove=True,
    )
    assert out == b"host\nv\n1700\n"
    client.volumes.get("py-run").remove()


def test_in_use_is_a_409_and_prune_reports_what_it_freed(client):
    container = client.containers.create("busybox", volumes=["py-busy:/b", "/py-anon"])
    with pytest.raises(APIError) as caught:
        client.volumes.get("py-busy").remove()
    assert caught.value.status_code == 409 and container.id in str(caught.value)
    container.remove()
    pruned = client.volumes.prune()
    assert "py-busy" not in pruned["VolumesDeleted"] and len(pruned["VolumesDeleted"]) == 1
    assert client.volumes.prune(filters={"all": "true"})["VolumesDeleted"] == ["py-busy"]


def test_bad_input_is_a_400(client):
    with pytest.raises(APIError) as caught:
        client.containers.create("busybox", volumes=["/tmp:/"])
    assert caught.value.status_code == 400
    assert "destination can't be '/'" in str(caught.value)
    with pytest.raises(APIError) as caught:
        client.volumes.create("bad name")
    assert caught.value.status_code == 400
