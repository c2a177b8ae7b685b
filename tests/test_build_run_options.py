"""What `docker build` gives its RUN steps, as dockerd's classic builder does: `--shm-size`,
`--add-host` and `--network` (a user-defined network; the engine's default bridge), stderr
in red in the stream, `--cache-from` limiting the cache to those images and their parents,
and docker-py's out-of-context Dockerfile (its `dockerfile` sent twice: name, then text).
The networked builds run with the agent in a network namespace of the test's own."""

from __future__ import annotations

import io
import os
import subprocess

import docker
import pytest
from agentserver import ok, serving
from netkit import clear, netns_agent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-buildrun"), registry) as server:
        ok(server.docker("pull", "busybox"))
        yield server


@pytest.fixture(scope="module")
def netagent(tmp_path_factory, registry):
    with netns_agent(tmp_path_factory.mktemp("netagent-build"), registry) as server:
        yield server


def build(agent, *args: str, dockerfile: str):
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_CONFIG": str(agent.workdir),
           "DOCKER_BUILDKIT": "0"}  # fmt: skip
    return subprocess.run(["docker", "build", *args, "-"], input=dockerfile, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def stream_of(client, dockerfile: str, **kw) -> list[dict]:
    return list(client.build(fileobj=io.BytesIO(dockerfile.encode()), decode=True, **kw))


def test_shm_size_sizes_the_run_steps_dev_shm(agent):
    script = "FROM busybox\nRUN df -k /dev/shm | tail -1 > /shm\n"
    ok(build(agent, "--shm-size", "96m", "-t", "shm96", dockerfile=script))
    out = ok(agent.docker("run", "--rm", "shm96", "cat", "/shm")).split()
    assert out[1] == str(96 * 1024)  # 1K-blocks
    ok(build(agent, "--no-cache", "-t", "shmdefault", dockerfile=script))
    assert ok(agent.docker("run", "--rm", "shmdefault", "cat", "/shm")).split()[1] == "65536"
    ok(agent.docker("rmi", "shm96", "shmdefault"))


def test_stderr_of_a_run_step_is_red_as_dockerd_sends_it(agent):
    client = docker.APIClient(base_url=agent.url, version="auto")
    chunks = stream_of(client, "FROM busybox\nRUN echo out; echo err >&2\n", nocache=True)
    streams = [c.get("stream") for c in chunks]
    assert "out\n" in streams and "\x1b[91merr\n\x1b[0m" in streams
    client.close()


def test_cache_from_limits_the_cache_to_those_images(agent):
    script = "FROM busybox\nENV FOO=bar\nRUN touch /baz\n"
    ok(build(agent, "-t", "cachesrc", dockerfile=script))
    hit = build(agent, "--cache-from", "cachesrc", "-t", "cachehit", dockerfile=script)
    assert hit.stdout.count("Using cache") == 2, hit.stdout
    miss = build(agent, "--cache-from", "nosuchimage", "-t", "cachemiss", dockerfile=script)
    assert miss.returncode == 0 and "Using cache" not in miss.stdout
    assert "--cache-from nosuchimage: no such image here" in miss.stdout
    ok(agent.docker("rmi", "cachesrc", "cachehit", "cachemiss"))


def test_add_host_and_network_are_refused_where_there_is_no_bridge(agent):
    refused = build(agent, "--add-host", "h.test:127.0.0.1", dockerfile="FROM busybox\n")
    assert refused.returncode != 0
    assert "extrahosts is not supported with network none" in refused.stderr
    unknown = build(agent, "--network", "nosuchnet", dockerfile="FROM busybox\nRUN true\n")
    assert unknown.returncode != 0 and "network nosuchnet not found" in unknown.stderr


def test_add_host_and_a_user_network_reach_the_run_steps(netagent):
    script = "FROM busybox\nRUN cp /etc/hosts /hosts-file && ping -c1 -W5 extra.test\n"
    ok(build(netagent, "--add-host", "extra.test:127.0.0.1", "-t", "hosts", dockerfile=script))
    hosts = ok(netagent.docker("run", "--rm", "hosts", "cat", "/hosts-file"))
    assert "127.0.0.1\textra.test" in hosts
    ok(netagent.docker("network", "create", "buildnet"))
    ok(netagent.docker("run", "-d", "--name", "target", "--network", "buildnet",
                       "--network-alias", "pingtarget", "busybox", "sleep", "1000"))  # fmt: skip
    ping = "FROM busybox\nRUN ping -c1 -W5 pingtarget\n"
    ok(build(netagent, "--network", "buildnet", "--no-cache", dockerfile=ping))
    isolated = build(netagent, "--network", "none", "--no-cache", dockerfile=ping)
    assert isolated.returncode == 1 and "returned a non-zero code: 1" in isolated.stderr
    netagent.docker("rmi", "hosts")
    clear(netagent)


def test_an_out_of_context_dockerfile_from_docker_py(agent, tmp_path):
    context, elsewhere = tmp_path / "context", tmp_path / "elsewhere"
    context.mkdir()
    elsewhere.mkdir()
    (context / "file.txt").write_text("hello")
    (context / ".dockerignore").write_text(".dockerignore\n")
    (elsewhere / "Dockerfile").write_text("FROM busybox\nCOPY . /src\nWORKDIR /src\n")
    client = docker.APIClient(base_url=agent.url, version="auto")
    chunks = list(client.build(path=str(context), dockerfile=str(elsewhere / "Dockerfile"),
                               tag="outside", decode=True))  # fmt: skip
    assert "Successfully tagged" in chunks[-1]["stream"], chunks
    assert ok(agent.docker("run", "--rm", "outside", "ls", "-a")).split() == [".", "..", "file.txt"]
    ok(agent.docker("rmi", "outside"))
    client.close()
