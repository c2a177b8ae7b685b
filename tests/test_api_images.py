"""Image list filters and `docker load` as dockerd answers them, through docker-py and the
docker CLI."""

from __future__ import annotations

import calendar
import json
import os
import time

import docker
import pytest
from agentserver import ok, serving
from netkit import install_compose

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-images"), registry) as server:
        assert server.docker("pull", "busybox").returncode == 0
        yield server


@pytest.fixture(scope="module")
def client(agent):
    client = docker.DockerClient(base_url=agent.url, version="auto", timeout=60)
    busybox = client.images.get("busybox")
    for repo, tag in (("filt/a", "1"), ("filt/a", "2"), ("filt/b", "1")):
        busybox.tag(repo, tag)
    yield client
    client.close()


def tags_listed(client, name=None, **filters) -> list[str]:
    """RepoTags of the list's rows (docker-py's models inspect each image again)."""
    rows = client.api.images(name, filters=filters)
    return sorted(t for row in rows for t in row["RepoTags"] if not t.startswith("filt/gone"))


def test_reference_filters_match_as_dockerds_do(client):
    assert tags_listed(client, "filt/a") == ["filt/a:1", "filt/a:2"]  # by name: its tags only
    assert tags_listed(client, "filt/a:2") == ["filt/a:2"]
    assert tags_listed(client, "filt/*:1") == ["filt/a:1", "filt/b:1"]
    assert tags_listed(client, "filt/?:[12]") == ["filt/a:1", "filt/a:2", "filt/b:1"]
    assert tags_listed(client, "*") == ["busybox:latest"]  # `*` stops at a `/`
    assert tags_listed(client, "busybox:latest") == ["busybox:latest"]
    assert client.images.list("nomatch") == []
    with pytest.raises(docker.errors.APIError, match="syntax error in pattern"):
        client.images.list("filt/[a")


def test_a_removed_tag_is_no_longer_listed_under_it(client, agent):
    client.images.get("busybox").tag("filt/gone", "x")
    assert [r["RepoTags"] for r in client.api.images("filt/gone:x")] == [["filt/gone:x"]]
    assert agent.docker("rmi", "filt/gone:x").returncode == 0
    assert client.api.images("filt/gone:x") == [] and client.api.images("filt/gone") == []
    listed = agent.docker("images", "filt/a", "--format", "{{.Repository}}:{{.Tag}}").stdout
    assert sorted(listed.split()) == ["filt/a:1", "filt/a:2"]


def test_dangling_label_and_unknown_filters(client):
    assert client.images.list(filters={"dangling": True}) == []
    assert tags_listed(client, dangling=False) == [
        "busybox:latest", "filt/a:1", "filt/a:2", "filt/b:1",
    ]  # fmt: skip
    assert client.images.list(filters={"label": "no-such-label"}) == []
    with pytest.raises(docker.errors.APIError, match="invalid filter 'colour'"):
        client.images.list(filters={"colour": "red"})


def test_a_broken_archive_is_a_200_with_the_error_in_the_stream(client, agent):
    with pytest.raises(docker.errors.ImageLoadError, match="not an image archive"):
        client.images.load(b"abc")
    answer = client.api._post(client.api._url("/images/load"), data=b"abc" * 1000)
    assert answer.status_code == 200 and answer.headers["Transfer-Encoding"] == "chunked"
    assert answer.json()["errorDetail"]["message"].startswith("not an image archive")


def test_an_archive_of_several_tags_loads_each_line_parsed(client, agent, tmp_path):
    archive = tmp_path / "three.tar"
    saved = agent.docker("save", "-o", str(archive), "filt/a:1", "filt/a:2", "filt/b:1")
    assert saved.returncode == 0, saved.stderr
    for tag in ("filt/a:1", "filt/a:2", "filt/b:1"):
        client.images.remove(tag)
    loaded = client.images.load(archive.read_bytes())
    assert sorted({t for image in loaded for t in image.tags if t.startswith("filt/")}) == [
        "filt/a:1", "filt/a:2", "filt/b:1",
    ]  # fmt: skip


def test_a_platform_asked_for_is_honoured_or_refused(client, agent):
    pulled = client.api.pull("busybox", tag="latest", platform="linux/amd64")
    assert "Status:" in pulled
    other = client.api.pull("busybox", tag="latest", platform="linux/arm64")  # error in stream
    assert "does not match the specified platform: wanted linux/arm64, actual: linux/amd64" in (
        other
    )
    with pytest.raises(docker.errors.APIError, match="unknown operating system or architecture"):
        client.api.pull("busybox", tag="latest", platform="foobar")
    run = agent.docker("run", "--rm", "--platform", "linux/arm64", "busybox", "true")
    assert run.returncode == 125
    assert "does not match the specified platform: wanted linux/arm64" in run.stderr
    assert (
        agent.docker("run", "--rm", "--platform", "linux/amd64", "busybox", "true").returncode == 0
    )
    assert client.images.get("busybox").attrs["Architecture"] == "amd64"


ZERO_TIME = "0001-01-01T00:00:00Z"


def last_tag_time(agent, name: str) -> str:
    return ok(agent.docker("image", "inspect", "--format", "{{json .Metadata}}", name))


def nanoseconds(stamp: str) -> int:
    """An RFC 3339 UTC time with up to nine fraction digits, as an integer."""
    whole, _, fraction = json.loads(stamp)["LastTagTime"].rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds * 10**9 + int(fraction.ljust(9, "0"))


def test_last_tag_time_is_when_a_tag_was_made_here_as_dockerd_keeps_it(agent, tmp_path):
    """Go's zero time for a pulled or loaded image; a `docker tag` stamps it, and neither
    an untag nor a pull of the same image again changes that (dockerd 20.10 did the same)."""
    ok(agent.docker("pull", "hello-world"))
    assert json.loads(last_tag_time(agent, "hello-world")) == {"LastTagTime": ZERO_TIME}
    before = time.time_ns()
    ok(agent.docker("tag", "hello-world", "lasttag/hello:1"))
    after = time.time_ns()
    stamp = last_tag_time(agent, "lasttag/hello:1")
    assert before <= nanoseconds(stamp) <= after
    ok(agent.docker("rmi", "lasttag/hello:1"))
    ok(agent.docker("pull", "hello-world"))
    assert last_tag_time(agent, "hello-world") == stamp
    archive = tmp_path / "hello.tar"
    ok(agent.docker("save", "-o", str(archive), "hello-world"))
    ok(agent.docker("rmi", "hello-world"))
    assert "hello-world" in ok(agent.docker("load", "-i", str(archive)))
    assert json.loads(last_tag_time(agent, "hello-world")) == {"LastTagTime": ZERO_TIME}
    ok(agent.docker("rmi", "hello-world"))


def test_a_build_or_commit_with_a_tag_stamps_last_tag_time(agent, tmp_path):
    """dockerd tags what `build -t`, `commit REPO:TAG` and `import` make through the same
    call as `docker tag`, which stamps LastTagTime."""
    (tmp_path / "Dockerfile").write_text("FROM busybox\nLABEL stamped=yes\n")
    ok(agent.docker("create", "--name", "lasttag-commit", "busybox"))
    before = time.time_ns()
    built = agent.docker("build", "-q", "-t", "lasttag/built:1", str(tmp_path))
    assert built.returncode == 0, built.stderr
    ok(agent.docker("commit", "lasttag-commit", "lasttag/committed:1"))
    after = time.time_ns()
    for name in ("lasttag/built:1", "lasttag/committed:1"):
        assert before <= nanoseconds(last_tag_time(agent, name)) <= after, name
    ok(agent.docker("rm", "lasttag-commit"))
    ok(agent.docker("rmi", "lasttag/built:1", "lasttag/committed:1"))


def test_compose_images_shows_a_local_tags_age_not_292_years(agent, tmp_path):
    """`docker compose images` prints now - LastTagTime: a missing stamp made it the
    longest duration Go has, "292 years ago"."""
    install_compose(agent.workdir)
    ok(agent.docker("tag", "busybox", "lasttag/compose:1"))
    project = tmp_path / "project"
    project.mkdir()
    service = {"image": "lasttag/compose:1", "network_mode": "none", "command": ["true"]}
    (project / "compose.yaml").write_text(json.dumps({"services": {"app": service}}))
    compose = ("compose", "--project-directory", str(project), "-p", "lasttag")
    try:
        ok(agent.docker(*compose, "create"))
        listed = ok(agent.docker(*compose, "images"))
        row = next(line for line in listed.splitlines() if "lasttag/compose" in line)
        assert row.endswith(" ago") and "292 years" not in row, listed
    finally:
        ok(agent.docker(*compose, "down"))
        ok(agent.docker("rmi", "lasttag/compose:1"))
