"""The image records: list, inspect, tag, and remove, with dockerd's answers and conflicts."""

from __future__ import annotations

from pathlib import Path

import imagekit as ik
import pytest
from agentkit import pull, small_image, unique_repo, visible_state
from vmctl_agent.errors import ImageConflict, ImageNotFound, InvalidReference
from vmctl_agent.store.images import ImageStore


@pytest.fixture
def pulled(registry, tmp_path: Path):
    """A store holding one freshly pulled image; returns (store, name, image)."""
    repo = unique_repo("images")
    image = small_image(repo.encode(), config={"Cmd": ["/bin/sh"], "Env": ["A=1"]})
    ik.RegistryClient(registry.url).push_image(repo, "v1", image)
    store = ImageStore(tmp_path / "image")
    name = f"{registry.host}/{repo}:v1"
    pull(store, name)
    return store, name, image


def test_inspect_has_dockers_fields(pulled):
    store, name, image = pulled
    info = store.get(name).inspect()
    assert info["Id"] == image.config.digest
    assert info["RepoTags"] == [name]
    assert info["RepoDigests"] == [name.rsplit(":", 1)[0] + "@" + image.digest]
    assert info["Config"]["Cmd"] == ["/bin/sh"] and "A=1" in info["Config"]["Env"]
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    assert info["RootFS"]["Layers"] == image.config.json()["rootfs"]["diff_ids"]
    assert info["Size"] > len(ik.busybox_layer()) // 2


def test_lookup_by_id_prefix_digest_and_tag(pulled):
    store, name, image = pulled
    hexid = image.config.digest[7:]
    for key in (
        name,
        image.config.digest,
        hexid,
        hexid[:12],
        name.rsplit(":", 1)[0] + "@" + image.digest,
    ):
        assert store.get(key).id == image.config.digest
    with pytest.raises(ImageNotFound, match="No such image: nope:latest"):
        store.get("nope:latest")


def test_tag_then_remove_the_tag_only_untags(pulled):
    store, name, image = pulled
    store.tag(name, "myapp:prod")
    assert store.get("myapp:prod").id == image.config.digest
    assert sorted(store.get(name).inspect()["RepoTags"]) == sorted([name, "myapp:prod"])
    assert store.remove("myapp:prod") == [{"Untagged": "myapp:prod"}]
    assert store.get(name).id == image.config.digest


def test_remove_by_id_with_two_tags_needs_force(pulled):
    store, name, image = pulled
    store.tag(name, "other:1")
    with pytest.raises(ImageConflict, match=r"must be forced.*referenced in multiple repositories"):
        store.remove(image.config.digest[7:19])
    events = store.remove(image.config.digest[7:19], force=True)
    assert {"Untagged": "other:1"} in events and {"Untagged": name} in events
    assert events[-1] == {"Deleted": image.config.digest}
    assert visible_state(store.root)["layers"] == []


def test_remove_last_tag_deletes_everything(pulled):
    store, name, image = pulled
    events = store.remove(name)
    assert events[0] == {"Untagged": name}
    assert events[-1] == {"Deleted": image.config.digest}
    assert visible_state(store.root) == {
        "images": [],
        "layers": [],
        "blobs": [],
        "tags": [(store.root / "repositories.json").read_text()],
    }
    assert store.list() == []


def test_image_used_by_a_container_is_kept(registry, tmp_path, pulled):
    _, name, image = pulled
    users = {image.config.digest: [("c0ffee" * 10 + "abcd", False)]}
    store = ImageStore(tmp_path / "image", containers_using=lambda i: users.get(i, []))
    with pytest.raises(ImageConflict, match="container c0ffeec0ffee is using its referenced image"):
        store.remove(name)
    assert store.get(name).id == image.config.digest
    assert store.remove(name, force=True) == [{"Untagged": name}]
    assert store.get(image.config.digest).id == image.config.digest, "kept for the container"
    users[image.config.digest] = [("c0ffee" * 10 + "abcd", True)]
    with pytest.raises(ImageConflict, match=r"cannot be forced.*running container"):
        store.remove(image.config.digest, force=True)


def test_ambiguous_id_prefix(tmp_path, registry):
    store = ImageStore(tmp_path / "image")
    repo = unique_repo("amb")
    client = ik.RegistryClient(registry.url)
    ids = []
    for i in range(40):  # enough images that two share a first hex digit
        image = small_image(f"{repo}-{i}".encode())
        client.push_image(repo, f"t{i}", image)
        ids.append(image.config.digest[7:])
        if len({x[0] for x in ids}) < len(ids):
            break
    for i in range(len(ids)):
        pull(store, f"{registry.host}/{repo}:t{i}")
    first = next(x[0] for x in ids if sum(y[0] == x[0] for y in ids) > 1)
    with pytest.raises(ImageConflict, match="ambiguous"):
        store.get(first)


def test_tag_refuses_digests(pulled):
    store, name, _ = pulled
    with pytest.raises(InvalidReference):
        store.tag(name, "x@sha256:" + "a" * 64)


def test_remove_by_digest(registry, tmp_path):
    repo = unique_repo("digest")
    image = small_image(repo.encode())
    digest = ik.RegistryClient(registry.url).push_image(repo, "v1", image)
    store = ImageStore(tmp_path / "image")
    by_digest = f"{registry.host}/{repo}@{digest}"
    pull(store, by_digest)
    assert store.get(by_digest).inspect()["RepoTags"] == []
    assert store.remove(by_digest) == [{"Untagged": by_digest}, {"Deleted": image.config.digest}]
    assert visible_state(store.root)["images"] == []


def test_remove_by_digest_keeps_a_tagged_image(pulled):
    store, name, image = pulled
    by_digest = name.rsplit(":", 1)[0] + "@" + image.digest
    assert store.remove(by_digest) == [{"Untagged": by_digest}]
    assert store.get(name).inspect()["RepoDigests"] == []
