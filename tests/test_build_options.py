"""POST /build's request options against `vmctl-agent serve`: resource limits and the network
of RUN steps, credentials for private bases (X-Registry-Config), --cache-from, ADD of a URL,
and every option the engine does not honour refused by name."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from agentserver import serving
from contextkit import assert_nothing_left, containers, entry, ok, post, tar_of
from runtimekit import busybox_image

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent"), registry) as server:
        yield server


def build(agent, dockerfile: str, *args: str):
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_CONFIG": str(agent.workdir)}
    return subprocess.run(
        ["docker", "build", *args, "-"],
        input=dockerfile, capture_output=True, text=True, timeout=300,
        env={**env, "DOCKER_BUILDKIT": "0"},
    )  # fmt: skip


def test_run_steps_get_the_limits_and_network_asked_for(agent):
    nets = sorted(os.listdir("/sys/class/net"))
    dockerfile = "FROM busybox\nRUN ls /sys/class/net > /nets\n"
    ok(build(agent, dockerfile, "--network", "host", "--memory", "64m", "-t", "hostnet"))
    seen = ok(agent.docker("run", "--rm", "hostnet", "cat", "/nets")).split()
    assert seen == nets
    ok(build(agent, dockerfile, "--no-cache", "-t", "nonet"))  # the default, as `docker run`
    assert ok(agent.docker("run", "--rm", "nonet", "cat", "/nets")).split() == ["lo"]
    small = build(agent, dockerfile, "--no-cache", "--memory", "100k", "-t", "small")
    assert small.returncode != 0 and "Minimum memory limit" in small.stderr, small.stderr
    assert agent.docker("image", "inspect", "small").returncode != 0
    assert_nothing_left(agent)


def test_a_private_base_needs_the_credentials_the_client_sends(agent, make_registry):
    private = make_registry(auth="token")
    private.client().push_image("team/base", "1", busybox_image())
    body = tar_of([entry("Dockerfile", f"FROM {private.host}/team/base:1\nENV X=1\n".encode())])
    status, data = post(agent, "/build?t=private", body)
    assert b"authentication required" in data
    config = {private.host: {"username": private.username, "password": private.password}}
    header = base64.urlsafe_b64encode(json.dumps(config).encode()).decode()
    status, data = post(agent, "/build?t=private", body, {"X-Registry-Config": header})
    assert status == 200 and b"Successfully tagged private:latest" in data, data
    wrong = {private.host: {"username": private.username, "password": "wrong"}}
    header = base64.urlsafe_b64encode(json.dumps(wrong).encode()).decode()
    status, data = post(agent, "/build?t=private2&pull=1", body, {"X-Registry-Config": header})
    assert b"refused the credentials" in data


def test_cache_from_an_image_and_add_fetches_urls(agent, tmp_path):
    (tmp_path / "served.txt").write_text("from the web\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/served.txt"
    try:
        out = ok(
            build(agent, f"FROM busybox\nADD {url} /web/\n", "--cache-from", "busybox", "-t", "web")
        )
        missing = build(agent, f"FROM busybox\nADD {url}.nope /web/\n")
    finally:
        server.shutdown()
    assert "Successfully tagged web:latest" in out
    listing = ok(agent.docker("run", "--rm", "web", "ls", "-ln", "/web/served.txt"))
    assert listing.startswith("-rw-------")  # a downloaded file is 0600, as dockerd makes it
    assert ok(agent.docker("run", "--rm", "web", "cat", "/web/served.txt")) == "from the web\n"
    assert missing.returncode != 0 and "failed to GET" in missing.stderr


def test_unset_spellings_of_options_are_accepted(agent):
    body = tar_of([entry("Dockerfile", b"FROM busybox\n")])
    status, data = post(agent, "/build?isolation=default&memswap=-1&ulimits=[]&extrahosts=[]", body)
    assert status == 200 and b"Successfully built" in data, data


@pytest.mark.parametrize(
    ("flag", "name"),
    [
        (("--ulimit", "nofile=10:10"), "ulimits"),
        (("--add-host", "a:1.2.3.4"), "extrahosts is not supported with network none"),
        (("--cgroup-parent", "x"), "cgroupparent"),
        (("--cpuset-cpus", "0"), "cpusetcpus"),
        (("--cpu-shares", "512"), "cpushares"),
        (("--security-opt", "seccomp=unconfined"), "securityopt"),
        (("--network", "bogus"), "network bogus not found"),
        (("--platform", "linux/arm64"), "it builds linux/amd64"),
    ],
)
def test_options_not_honoured_are_refused_by_name(agent, flag, name):
    result = build(agent, "FROM busybox\nRUN true\n", *flag)
    assert result.returncode != 0 and name in result.stderr, result.stderr
    assert containers(agent) == []


def test_docker_compose_builds_through_the_classic_builder(agent, tmp_path):
    import compose

    plugins = agent.workdir / "cli-plugins"
    plugins.mkdir(exist_ok=True)
    shutil.copy(Path(compose.__file__).parent / "docker-compose", plugins / "docker-compose")
    (tmp_path / "app").mkdir()
    (tmp_path / "app/Dockerfile").write_text(
        "FROM busybox\nARG GREETING\nRUN echo $GREETING > /g\n"
    )
    (tmp_path / "compose.yaml").write_text(
        "services:\n  web:\n    build:\n      context: ./app\n      args:\n"
        "        GREETING: composed\n    image: composed:latest\n"
    )
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_CONFIG": str(agent.workdir)}
    result = subprocess.run(
        ["docker", "compose", "build"], cwd=tmp_path, capture_output=True, text=True,
        env={**env, "DOCKER_BUILDKIT": "0"}, timeout=300,
    )  # fmt: skip
    ok(result)
    assert ok(agent.docker("run", "--rm", "composed", "cat", "/g")) == "composed\n"


def test_a_full_disk_mid_build_is_reported_and_leaves_nothing(tmp_path, registry):
    """The data root on a 16 MB tmpfs: the RUN's 7 MB fit, storing them as a layer does not."""
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(data)], check=True)
    try:
        with serving(tmp_path, registry) as small:
            big = "FROM busybox\nRUN head -c 7000000 /dev/urandom > /big\n"
            result = build(small, big, "-t", "toobig")
            assert result.returncode != 0
            assert "no space left on device while building: free space" in result.stderr
            assert_nothing_left(small)
            assert not list((small.data_root / "image" / "tmp").iterdir())
            ok(build(small, "FROM busybox\nRUN echo fits > /f\n", "-t", "fits"))
    finally:
        subprocess.run(["umount", str(data)], check=True)


def test_a_dead_agents_build_workspace_is_removed(agent):
    dead = next(p for p in range(4_000_000, 4_100_000) if not Path(f"/proc/{p}").exists())
    stale = agent.data_root / "builds" / f"{dead}-0123456789ab"
    (stale / "context").mkdir(parents=True)
    ok(build(agent, "FROM busybox\n", "-t", "after-a-crash"))
    assert not stale.exists()
