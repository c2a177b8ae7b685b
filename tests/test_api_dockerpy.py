"""docker-py (the SDK the host side uses) against `vmctl-agent serve`."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest
from agentserver import serving
from docker.errors import APIError, ContainerError, ImageNotFound, NotFound

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def client(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-py"), registry) as server:
        yield docker.DockerClient(base_url=server.url, version="auto", timeout=60)


def test_images_pull_list_get_remove(client):
    image = client.images.pull("busybox", tag="latest")
    assert "busybox:latest" in image.tags
    assert any("busybox:latest" in i.tags for i in client.images.list())
    assert client.images.get("busybox").id == image.id
    image.tag("copy", "v1")
    client.images.remove("copy:v1")
    with pytest.raises(ImageNotFound):
        client.images.get("copy:v1")


def test_containers_run_plain_detached_and_auto_removed(client):
    assert client.containers.run("busybox", ["echo", "plain"], remove=True) == b"plain\n"
    detached = client.containers.run("busybox", ["sh", "-c", "echo hi; sleep 30"], detach=True)
    assert client.containers.get(detached.id).status == "running"
    assert detached.id in [c.id for c in client.containers.list()]
    result = detached.exec_run(["sh", "-c", "echo from exec; exit 2"])
    assert (result.exit_code, result.output) == (2, b"from exec\n")
    detached.stop(timeout=1)
    assert detached.wait()["StatusCode"] == 137
    assert detached.logs() == b"hi\n"
    detached.remove()
    with pytest.raises(NotFound):
        client.containers.get(detached.id)


def test_errors_surface_as_docker_py_exceptions(client):
    with pytest.raises(ImageNotFound):
        client.containers.create("no-such-image-anywhere:v9")
    with pytest.raises(NotFound, match="not found"):
        client.containers.run("no-such-image-anywhere:v9", ["true"])  # create, pull, give up
    with pytest.raises(ContainerError) as failed:
        client.containers.run("busybox", ["sh", "-c", "echo oops >&2; exit 5"], remove=True)
    assert failed.value.exit_status == 5
    running = client.containers.run("busybox", ["sleep", "30"], detach=True)
    with pytest.raises(APIError) as conflict:
        running.remove()
    assert conflict.value.status_code == 409
    assert "Stop the container before attempting removal" in str(conflict.value)
    running.remove(force=True)


def test_stats_carry_block_io_in_dockerds_shape(client):
    """Bytes per device on cgroup v2 (the VM); null where the cgroup accounts no I/O (this
    host's v1 hierarchies have no blkio), which the docker CLI shows as 0B / 0B."""
    container = client.containers.run("busybox", ["sleep", "30"], detach=True)
    stats = container.stats(stream=False)
    entries = stats["blkio_stats"]["io_service_bytes_recursive"]
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").is_file()
    if v2 and "io" in Path("/sys/fs/cgroup/cgroup.controllers").read_text().split():
        assert all(set(e) == {"major", "minor", "op", "value"} for e in entries)
        assert {e["op"] for e in entries} <= {"read", "write"}
    else:
        assert entries is None
    container.remove(force=True)
