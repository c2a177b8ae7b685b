"""`docker push` (POST /images/{name}/push) with the real docker CLI against `vmctl-agent
serve` and real loopback registries: blob checks, cross-repository mounts, chunked and
monolithic uploads, the manifest, dockerd's progress lines, token auth with push scope, and
the errors for wrong credentials and a registry that is down. And docker-py's
inspect_distribution (GET /distribution/{name}/json) of an image and of an index."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import docker
import imagekit as ik
import pytest
import requests
from agentkit import small_image, unique_repo
from agentserver import ok, serving
from vmctl_agent.store import push as pushing
from vmctl_agent.store import reference as refs
from vmctl_agent.store.registry import Endpoint, RegistryClient, RepositorySession

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-push"), registry) as server:
        ok(server.docker("pull", "busybox"))
        yield server


def build(agent, tag: str, dockerfile: str) -> None:
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_CONFIG": str(agent.workdir)}
    result = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile,
                            capture_output=True, text=True, timeout=300,
                            env={**env, "DOCKER_BUILDKIT": "0"})  # fmt: skip
    assert result.returncode == 0, result.stderr


def login(agent, host: str, username: str, password: str):
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_CONFIG": str(agent.workdir)}
    cmd = ["docker", "login", "-u", username, "--password-stdin", host]
    return subprocess.run(cmd, input=password, capture_output=True, text=True, env=env, timeout=60)


def test_push_uploads_then_finds_layers_and_mounts_across_repositories(agent, registry):
    target = f"{registry.host}/pushed/app:v1"
    build(agent, target, 'FROM busybox\nRUN head -c 3000000 /dev/urandom > /big\nCMD ["cat"]\n')
    first = ok(agent.docker("push", target))
    assert f"The push refers to repository [{registry.host}/pushed/app]" in first
    assert "Pushed" in first
    digest_line = [line for line in first.splitlines() if line.startswith("v1: digest: ")]
    assert digest_line and "size: " in digest_line[0]
    again = ok(agent.docker("push", target))
    assert "Layer already exists" in again and "Pushed" not in again
    assert digest_line[0] in again  # the same manifest, the same digest
    other = f"{registry.host}/pushed/other:v2"
    ok(agent.docker("tag", target, other))
    mounted = ok(agent.docker("push", other))
    assert "Mounted from pushed/app" in mounted and "Pushed" not in mounted, mounted
    ok(agent.docker("rmi", target, other))
    ok(agent.docker("pull", other))  # what was pushed pulls back whole
    out = ok(agent.docker("run", "--rm", other, "sh", "-c", "wc -c < /big"))
    assert out.strip() == "3000000"
    digests = json.loads(ok(agent.docker("image", "inspect", other)))[0]["RepoDigests"]
    assert f"{registry.host}/pushed/other@{digest_line[0].split()[2]}" in digests
    ok(agent.docker("rmi", other))


@pytest.mark.parametrize("auth", ["token", "htpasswd"])
def test_push_needs_the_right_credentials(agent, make_registry, auth):
    private = make_registry(auth=auth)
    target = f"{private.host}/team/app:1"
    ok(agent.docker("tag", "busybox", target))
    anonymous = agent.docker("push", target)
    assert anonymous.returncode != 0 and "docker login" in anonymous.stderr, anonymous.stderr
    wrong = login(agent, private.host, private.username, "wrong")
    assert wrong.returncode != 0 and "incorrect username or password" in wrong.stderr
    right = login(agent, private.host, private.username, private.password)
    assert right.returncode == 0, right.stderr
    pushed = agent.docker("push", target)
    assert pushed.returncode == 0 and "1: digest: sha256:" in pushed.stdout, pushed.stderr
    if auth == "token":
        assert "repository:team/app:pull,push" in private.token_server.scopes_seen
    agent.docker("logout", private.host)
    ok(agent.docker("rmi", target))


def test_push_errors_for_a_registry_that_is_down_and_a_missing_image(agent):
    ok(agent.docker("tag", "busybox", "127.0.0.1:1/nobody/here:x"))
    down = agent.docker("push", "127.0.0.1:1/nobody/here:x")
    assert down.returncode != 0 and "cannot reach registry 127.0.0.1:1" in down.stderr
    ok(agent.docker("rmi", "127.0.0.1:1/nobody/here:x"))
    missing = agent.docker("push", "127.0.0.1:1/no/such:tag")
    assert missing.returncode != 0
    assert "An image does not exist locally with the tag: 127.0.0.1:1/no/such" in missing.stderr


def test_a_blob_goes_up_in_chunks_with_content_ranges(registry, tmp_path):
    """The chunked upload itself, small chunks against the real registry."""
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(10_000))
    digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    ref = refs.parse(f"{registry.host}/chunked/blob:x")
    session = RepositorySession(RegistryClient(), Endpoint(registry.url), ref,
                                scope="repository:chunked/blob:pull,push")  # fmt: skip
    location = pushing.start_upload(session)[1]
    reports: list[int] = []
    pushing.upload_chunks(session, location, blob, digest, reports.append, chunk_size=3000)
    assert reports == [3000, 6000, 9000, 10000]
    fetched = requests.get(f"{registry.url}/v2/chunked/blob/blobs/{digest}", timeout=30)
    assert fetched.content == blob.read_bytes()


def test_distribution_inspect_of_an_image_and_of_an_index(agent, registry):
    client = docker.APIClient(base_url=agent.url, version="auto")
    amd = small_image(b"dist-amd64")
    arm = small_image(b"dist-arm", architecture="arm64", variant="v8")
    repo = unique_repo("dist")
    pusher = ik.RegistryClient(registry.url)
    single = pusher.push_image(repo, "one", amd)
    entries = [(amd, {"os": "linux", "architecture": "amd64"}),
               (arm, {"os": "linux", "architecture": "arm64", "variant": "v8"})]  # fmt: skip
    index = ik.build_index(entries)
    multi = pusher.push_index(repo, "multi", index, [amd, arm])
    one = client.inspect_distribution(f"{registry.host}/{repo}:one")
    assert one["Descriptor"]["digest"] == single
    assert one["Descriptor"]["mediaType"] == ik.DOCKER_MANIFEST
    assert one["Platforms"] == [{"architecture": "amd64", "os": "linux"}]
    both = client.inspect_distribution(f"{registry.host}/{repo}:multi")
    assert both["Descriptor"] == {"mediaType": index.media_type, "digest": multi,
                                  "size": len(index.data)}  # fmt: skip
    arm64 = {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert both["Platforms"] == [{"architecture": "amd64", "os": "linux"}, arm64]
    with pytest.raises(docker.errors.NotFound, match="not found"):
        client.inspect_distribution(f"{registry.host}/{repo}:missing")
    with pytest.raises(docker.errors.APIError, match=r"cannot reach registry 127\.0\.0\.1:1"):
        client.inspect_distribution("127.0.0.1:1/no/where:x")
    client.close()


def test_push_all_tags_of_a_repository(agent, registry):
    repo = f"{registry.host}/pushed/alltags"
    ok(agent.docker("tag", "busybox", f"{repo}:a"))
    build(agent, f"{repo}:b", "FROM busybox\nRUN echo b > /b\n")
    out = ok(agent.docker("push", "--all-tags", repo))
    assert [line.split(":")[0] for line in out.splitlines() if ": digest: " in line] == ["a", "b"]
    none = agent.docker("push", "--all-tags", f"{registry.host}/pushed/nothing")
    assert none.returncode != 0
    assert f"An image does not exist locally with the tag: {registry.host}/pushed/nothing" in (
        none.stderr
    )
    ok(agent.docker("rmi", f"{repo}:a", f"{repo}:b"))
