"""`vmctl-agent` as a user runs it: output like docker's, errors as one clear line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import imagekit as ik
import pytest
from agentkit import small_image, unique_repo


def agent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["vmctl-agent", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def hub_image(registry):
    """An image the mirror serves as docker.io/library/<name>."""
    name = unique_repo("x").replace("/", "-")
    image = small_image(name.encode())
    ik.RegistryClient(registry.url).push_image(f"library/{name}", "latest", image)
    return name, image


def test_pull_prints_what_docker_prints(registry, tmp_path, hub_image):
    name, image = hub_image
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"registry-mirrors": [registry.url]}))
    root = str(tmp_path / "data")
    first = agent("pull", "--data-root", root, "--config", str(daemon_json), name)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    layer = image.layers[1].digest[7:19]
    assert lines[0] == f"latest: Pulling from library/{name}"
    assert f"{layer}: Pulling fs layer" in lines and f"{layer}: Pull complete" in lines
    assert lines[-3:] == [
        f"Digest: {image.digest}",
        f"Status: Downloaded newer image for {name}:latest",
        f"docker.io/library/{name}:latest",
    ]
    again = agent("pull", "--data-root", root, "--registry-mirror", registry.url, name)
    assert again.stdout.splitlines() == [
        f"latest: Pulling from library/{name}",
        f"Digest: {image.digest}",
        f"Status: Image is up to date for {name}:latest",
        f"docker.io/library/{name}:latest",
    ]


def test_images_inspect_tag_rmi(registry, tmp_path, hub_image):
    name, image = hub_image
    root = str(tmp_path / "data")
    assert agent("pull", "-q", "--data-root", root, "--registry-mirror", registry.url, name)
    assert agent("tag", "--data-root", root, name, "mine:1").returncode == 0
    listing = agent("images", "--data-root", root).stdout.splitlines()
    assert listing[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert {tuple(line.split()[:3]) for line in listing[1:]} == {
        (name, "latest", image.config.digest[7:19]),
        ("mine", "1", image.config.digest[7:19]),
    }
    info = json.loads(agent("inspect", "--data-root", root, "mine:1").stdout)
    assert info[0]["Id"] == image.config.digest
    removed = agent("rmi", "--data-root", root, "mine:1", name)
    assert removed.returncode == 0, removed.stderr
    assert "Untagged: mine:1" in removed.stdout
    assert f"Deleted: {image.config.digest}" in removed.stdout
    assert agent("images", "-q", "--data-root", root).stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["pull", "Not/Valid"],
            "Error: invalid reference format: repository name (Not/Valid) must be lowercase",
        ),
        (["pull", "127.0.0.1:1/x"], "Error: cannot reach registry 127.0.0.1:1: connection refused"),
        (["inspect", "nothing-here"], "Error: No such image: nothing-here"),
        (["rmi", "nothing-here"], "Error: No such image: nothing-here"),
        (["pull", "--registry-mirror", "ftp://x", "a"], "Error: invalid registry mirror 'ftp://x'"),
    ],
)
def test_errors_are_one_clear_line(tmp_path, args, message):
    result = agent(args[0], "--data-root", str(tmp_path / "data"), *args[1:])
    assert result.returncode == 1
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr


def test_broken_config_file(tmp_path: Path):
    bad = tmp_path / "daemon.json"
    bad.write_text("{not json")
    result = agent("images", "--config", str(bad))
    assert result.returncode == 1 and "is not valid JSON" in result.stderr
    bad.write_text(json.dumps({"registry-mirrors": "http://x"}))
    result = agent("images", "--config", str(bad))
    assert "registry-mirrors in" in result.stderr and "must be a list of strings" in result.stderr


def test_config_file_sets_the_data_root(registry, tmp_path, hub_image):
    name, _ = hub_image
    cfg = tmp_path / "daemon.json"
    cfg.write_text(
        json.dumps({"data-root": str(tmp_path / "from-config"), "registry-mirrors": [registry.url]})
    )
    assert agent("pull", "-q", "--config", str(cfg), name).returncode == 0
    assert (tmp_path / "from-config" / "image" / "repositories.json").is_file()
