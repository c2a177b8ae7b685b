"""`docker build` (the classic builder, DOCKER_BUILDKIT=0) with the real docker CLI against
`vmctl-agent serve`; the images it makes are inspected layer by layer."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from agentserver import serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent"), registry) as server:
        yield server


def build(agent, context: Path, *args: str, input: str | None = None):
    env = {**os.environ, "DOCKER_HOST": agent.url, "DOCKER_CONFIG": str(agent.workdir)}
    env["DOCKER_BUILDKIT"] = "0"
    return subprocess.run(
        ["docker", "build", *args, str(context) if input is None else "-"],
        capture_output=True, text=True, env=env, input=input, timeout=300,
    )  # fmt: skip


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def ok(result) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def inspect(agent, name: str) -> dict:
    return json.loads(ok(agent.docker("image", "inspect", name)))[0]


def layer_files(agent, name: str) -> list[dict[str, tarfile.TarInfo]]:
    """Each layer of the image as `docker save` gives it: name -> tar entry."""
    saved = subprocess.run(
        ["docker", "save", name],
        capture_output=True, env={**os.environ, "DOCKER_HOST": agent.url}, check=True,
    ).stdout  # fmt: skip
    outer = tarfile.open(fileobj=io.BytesIO(saved))
    manifest = json.load(outer.extractfile("manifest.json"))[0]
    layers = []
    for layer in manifest["Layers"]:
        inner = tarfile.open(fileobj=outer.extractfile(layer))
        layers.append({m.name.rstrip("/"): m for m in inner.getmembers()})
    return layers


def containers(agent) -> list[str]:
    return ok(agent.docker("ps", "-aq")).split()


def test_a_build_runs_copies_and_tags(agent, tmp_path):
    ctx = project(
        tmp_path,
        {
            "Dockerfile": (
                "FROM busybox\n"
                "ENV GREETING=hello\n"
                "COPY app.txt /app/\n"
                "RUN echo $GREETING > /app/out && rm /bin/true\n"
                'CMD ["cat", "/app/out"]\n'
            ),
            "app.txt": "the app\n",
        },
    )
    result = build(agent, ctx, "-t", "built:one", "-t", "built:two")
    out = ok(result)
    assert "Step 1/5 : FROM busybox" in out and "Step 4/5 : RUN echo $GREETING" in out
    assert " ---> Running in " in out and "Successfully built " in out
    assert "Successfully tagged built:one" in out and "Successfully tagged built:two" in out
    assert ok(agent.docker("run", "--rm", "built:one")) == "hello\n"
    image = inspect(agent, "built:two")
    assert image["Config"]["Cmd"] == ["cat", "/app/out"]
    assert "GREETING=hello" in image["Config"]["Env"]
    layers = layer_files(agent, "built:one")
    copy_layer, run_layer = layers[-2], layers[-1]
    assert set(copy_layer) == {"app", "app/app.txt"}
    assert copy_layer["app/app.txt"].uid == 0 and copy_layer["app/app.txt"].mode == 0o644
    assert "app/out" in run_layer and "bin/.wh.true" in run_layer
    assert not any(n.startswith(("proc", "sys", "dev")) for n in run_layer)
    assert containers(agent) == []
