"""docker compose v2 (the real binary) against the engine, the agent in a network namespace
the test made: composekit's four-service project through a user's whole session, and the
engine calls compose leans on (list and event filters narrowed by several labels)."""

from __future__ import annotations

import json
import os
import time

import pytest
from agentserver import PATIENCE
from composekit import Shop, http_get, walk_through
from netkit import clear, in_netns, install_compose, netns_agent, ok

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with netns_agent(tmp_path_factory.mktemp("composeagent"), registry) as server:
        install_compose(server.workdir)
        yield server


@pytest.fixture
def clean(agent, monkeypatch):
    """compose builds with the classic builder (`POST /build`); each test ends with no
    container, user network or volume left, and nothing of theirs in the namespace."""
    monkeypatch.setenv("DOCKER_BUILDKIT", "0")
    yield agent
    clear(agent)
    assert ok(agent.docker("volume", "ls", "-q")) == ""


def test_a_four_service_project_through_a_users_session(clean, tmp_path):
    agent = clean

    def fetch(port: int, path: str) -> str:  # the agent's namespace is "the user's machine"
        return in_netns(agent.pid, http_get, port, path)

    def docker(*args: str):  # a build or a wait on a loaded machine takes its time
        return agent.docker(*args, timeout=PATIENCE)

    shop = Shop(docker, tmp_path / "shop", "shop", 8095, fetch)
    try:
        walk_through(shop)
    finally:
        agent.docker(*shop.project(), "down", "-v", "-t", "0")
        shop.remove_images()
    assert ok(agent.docker("images", "-q", "--filter", "reference=shop-*")) == ""


def _labelled(agent, kind: str, name: str, *labels: str) -> None:
    flags = [arg for label in labels for arg in ("--label", label)]
    if kind == "container":
        ok(agent.docker("run", "-d", "--name", name, *flags, "busybox", "sleep", "60"))
    else:
        ok(agent.docker(kind, "create", *flags, name))


def _listed(agent, kind: str, *labels: str) -> list[str]:
    argv = {"container": ("ps", "-a"), "network": ("network", "ls"), "volume": ("volume", "ls")}
    flags = [arg for label in labels for arg in ("--filter", f"label={label}")]
    name = "{{.Names}}" if kind == "container" else "{{.Name}}"
    return sorted(ok(agent.docker(*argv[kind], *flags, "--format", name)).split())


@pytest.mark.parametrize("kind", ["container", "network", "volume"])
def test_several_label_filters_must_all_hold_as_dockerd_reads_them(clean, kind):
    """compose finds a service's containers by project AND service label: `compose exec
    store` ran in whichever container of the project came first when the list ORed them."""
    agent = clean
    _labelled(agent, kind, "shop-store", "project=shop", "service=store")
    _labelled(agent, kind, "shop-web", "project=shop", "service=web")
    _labelled(agent, kind, "blog-store", "project=blog", "service=store")
    assert _listed(agent, kind, "project=shop", "service=store") == ["shop-store"]
    assert _listed(agent, kind, "project=shop") == ["shop-store", "shop-web"]
    assert _listed(agent, kind, "project", "service=store") == ["blog-store", "shop-store"]
    assert _listed(agent, kind, "project=shop", "service=db") == []
    assert _listed(agent, kind, "project=shop", "nope") == []
    remove = {"container": ("rm", "-f"), "network": ("network", "rm"), "volume": ("volume", "rm")}
    ok(agent.docker(*remove[kind], "shop-store", "shop-web", "blog-store"))


def test_the_event_stream_narrowed_by_several_labels(clean):
    """`compose events` and `up` follow /events filtered by the project's label."""
    agent = clean
    since = time.time()
    for project, service in (("shop", "store"), ("shop", "web"), ("blog", "store")):
        labels = ("--label", f"project={project}", "--label", f"service={service}")
        ok(agent.docker("create", "--name", f"{project}-{service}", *labels, "busybox"))
    out = ok(agent.docker(
        "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}", "--format",
        "{{json .}}", "--filter", "label=project=shop", "--filter", "label=service=store",
    ))  # fmt: skip
    seen = [json.loads(line) for line in out.splitlines()]
    assert [(e["Action"], e["Actor"]["Attributes"]["name"]) for e in seen] == [
        ("create", "shop-store")
    ]
