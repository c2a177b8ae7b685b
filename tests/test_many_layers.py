"""Images of many layers, as long Dockerfiles make them: overlay's lower dirs must fit in one
mount(2) option page, which by the layers' 64-hex names held about 55. With `l/` short names
(as Docker's overlay2 keeps them) a 120-layer image runs, builds on, and leaves no link behind
when it is removed."""

from __future__ import annotations

import os
from pathlib import Path

import imagekit as ik
import pytest
from agentserver import ok, serving
from vmctl_agent.store.content import short_lower

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")

LAYERS = 120


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    layers = [ik.busybox_layer()] + [
        ik.tar_bytes([ik.file(f"layers/{n:03}", f"layer {n}\n".encode())]) for n in range(1, LAYERS)
    ]
    image = ik.build_image(layers, config={"Cmd": ["cat", "/layers/001"]})
    ik.RegistryClient(registry.url).push_image("library/tall", "latest", image)
    with serving(tmp_path_factory.mktemp("agent-layers"), registry) as server:
        yield server


def links(agent) -> list[Path]:
    directory = agent.data_root / "image" / "l"
    return sorted(directory.iterdir()) if directory.is_dir() else []


def test_an_image_of_120_layers_runs_and_sees_its_first_and_last(agent):
    ok(agent.docker("pull", "tall"))
    out = ok(agent.docker("run", "--rm", "tall", "sh", "-c", "cat /layers/001 /layers/119"))
    assert out == "layer 1\nlayer 119\n"
    assert len(links(agent)) == LAYERS and all(p.resolve().is_dir() for p in links(agent))


def test_a_build_on_it_copies_and_runs_on_top(agent, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        "FROM tall\nCOPY note /layers/note\nRUN cat /layers/001 /layers/note > /both\n"
    )
    (tmp_path / "note").write_text("copied\n")
    ok(agent.docker("build", "-q", "-t", "taller", str(tmp_path)))
    assert ok(agent.docker("run", "--rm", "taller", "cat", "/both")) == "layer 1\ncopied\n"
    ok(agent.docker("rmi", "taller"))


def test_removing_the_image_removes_its_links(agent):
    ok(agent.docker("pull", "tall"))
    ok(agent.docker("rmi", "tall"))
    assert links(agent) == []


def test_a_prefix_shared_with_another_layer_keeps_the_long_name(tmp_path):
    layers = tmp_path / "layers"
    mine, other = "ab" * 32, "ab" * 6 + "cd" * 26
    for name in (mine, other):
        (layers / name / "diff").mkdir(parents=True)
    assert short_lower(str(layers / other / "diff")) == f"../l/{other[:12]}"
    assert short_lower(str(layers / mine / "diff")) == f"{mine}/diff"  # the prefix is taken
    assert short_lower(str(layers / other / "diff")) == f"../l/{other[:12]}"  # and stays
    assert os.readlink(tmp_path / "l" / other[:12]) == f"../layers/{other}/diff"
