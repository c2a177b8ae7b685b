"""Pulls from a real registry (Debian's docker-registry on loopback) into the agent's store."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import imagekit as ik
import pytest
from agentkit import leftovers, pull, small_image, unique_repo, visible_state
from vmctl_agent.errors import (
    AuthenticationError,
    ManifestUnknown,
    PlatformNotFound,
    RegistryUnreachable,
    UnsupportedManifest,
    VerificationError,
)
from vmctl_agent.store.auth import Credentials
from vmctl_agent.store.images import ImageStore


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "data" / "image")


def assert_empty(store: ImageStore) -> None:
    """Nothing visible and nothing half-written: the state a failed pull must leave."""
    state = visible_state(store.root)
    assert state == {"images": [], "layers": [], "blobs": [], "tags": []}
    assert leftovers(store.root) == []


# -- every manifest type --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["docker", "oci"])
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_pull_image_manifest(registry, store, fmt, compression):
    image = small_image(fmt.encode(), fmt=fmt, compression=compression)
    repo = unique_repo()
    digest = ik.RegistryClient(registry.url).push_image(repo, "v1", image)
    record, messages = pull(store, f"{registry.host}/{repo}:v1")
    assert record.id == image.config.digest
    assert record.repo_digests == [f"{registry.host}/{repo}@{digest}"]
    layer = store.content.layer_dir(record.diff_ids[1])
    assert (layer / "etc" / "image-tag").read_bytes() == fmt.encode()
    assert os.access(store.content.layer_dir(record.diff_ids[0]) / "bin" / "busybox", os.X_OK)
    statuses = [m["status"] for m in messages]
    assert statuses[0] == f"Pulling from {repo}"
    assert statuses.count("Pull complete") == 2
    assert statuses[-2:] == [
        f"Digest: {digest}",
        f"Status: Downloaded newer image for {registry.host}/{repo}:v1",
    ]
    assert leftovers(store.root) == []


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_index_picks_amd64_even_when_it_is_not_first(registry, store, fmt):
    arm = small_image(b"arm64", fmt=fmt, architecture="arm64", variant="v8")
    s390 = small_image(b"s390x", fmt=fmt, architecture="s390x")
    amd = small_image(b"amd64", fmt=fmt)
    attestation, att_desc = ik.attestation_for(amd)
    entries = [
        (arm, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        (s390, {"os": "linux", "architecture": "s390x"}),
        (amd, {"os": "linux", "architecture": "amd64"}),
    ]
    index = ik.build_index(entries, fmt=fmt, extra=[att_desc])
    repo = unique_repo()
    digest = ik.RegistryClient(registry.url).push_index(
        repo, "multi", index, [arm, s390, amd, attestation]
    )
    record, _ = pull(store, f"{registry.host}/{repo}:multi")
    assert record.id == amd.config.digest
    assert record.manifest_digest == amd.digest
    assert record.repo_digests == [f"{registry.host}/{repo}@{digest}"]
    tag_file = store.content.layer_dir(record.diff_ids[1]) / "etc" / "image-tag"
    assert tag_file.read_bytes() == b"amd64"


def test_attestation_is_never_chosen(registry, store):
    arm = small_image(b"arm", architecture="arm64")
    attestation, att_desc = ik.attestation_for(arm)
    index = ik.build_index([(arm, {"os": "linux", "architecture": "arm64"})], extra=[att_desc])
    repo = unique_repo()
    ik.RegistryClient(registry.url).push_index(repo, "t", index, [arm, attestation])
    with pytest.raises(PlatformNotFound) as err:
        pull(store, f"{registry.host}/{repo}:t")
    assert str(err.value) == (
        "no matching manifest for linux/amd64 in the manifest list entries (offered: linux/arm64)"
    )
    assert_empty(store)


def test_no_amd64_names_the_platforms_offered(registry, store):
    arm = small_image(b"arm", architecture="arm64", variant="v8")
    ppc = small_image(b"ppc", architecture="ppc64le")
    entries = [
        (arm, {"os": "linux", "architecture": "arm64", "variant": "v8"}),
        (ppc, {"os": "linux", "architecture": "ppc64le"}),
    ]
    repo = unique_repo()
    ik.RegistryClient(registry.url).push_index(repo, "t", ik.build_index(entries), [arm, ppc])
    with pytest.raises(PlatformNotFound, match=r"offered: linux/arm64/v8, linux/ppc64le\)"):
        pull(store, f"{registry.host}/{repo}:t")
    assert_empty(store)


def test_pull_by_digest(registry, store):
    image = small_image(b"by-digest")
    repo = unique_repo()
    digest = ik.RegistryClient(registry.url).push_image(repo, "t", image)
    record, _ = pull(store, f"{registry.host}/{repo}@{digest}")
    assert record.id == image.config.digest
    assert store.get(f"{registry.host}/{repo}@{digest}").id == image.config.digest
    assert store.list()[0].repo_tags == ()


# -- auth ---------------------------------------------------------------------------------------


def test_token_auth_with_credentials(make_registry, store):
    reg = make_registry(auth="token")
    repo = unique_repo()
    reg.client().push_image(repo, "t", small_image(b"token"))
    before = reg.token_requests
    creds = Credentials(reg.username, reg.password)
    record, _ = pull(store, f"{reg.host}/{repo}:t", credentials=creds)
    assert store.get(f"{reg.host}/{repo}:t").id == record.id
    assert reg.token_requests == before + 1, "one token serves the whole pull"


def test_token_auth_without_credentials_is_refused(make_registry, store):
    reg = make_registry(auth="token")
    repo = unique_repo()
    reg.client().push_image(repo, "t", small_image(b"token"))
    with pytest.raises(AuthenticationError, match="authentication required: run `docker login`"):
        pull(store, f"{reg.host}/{repo}:t")
    with pytest.raises(AuthenticationError, match="refused the credentials of 'tester'"):
        pull(store, f"{reg.host}/{repo}:t", credentials=Credentials("tester", "wrong"))
    assert_empty(store)


def test_basic_auth(make_registry, store):
    reg = make_registry(auth="htpasswd")
    repo = unique_repo()
    reg.client().push_image(repo, "t", small_image(b"basic"))
    with pytest.raises(AuthenticationError, match="docker login"):
        pull(store, f"{reg.host}/{repo}:t")
    record, _ = pull(store, f"{reg.host}/{repo}:t", credentials=Credentials("tester", "secret"))
    assert record.id


# -- lies and failures --------------------------------------------------------------------------


def test_corrupted_blob_is_refused_and_leaves_nothing(registry, store):
    image = small_image(b"corrupt", compression="none")
    repo = unique_repo()
    ik.RegistryClient(registry.url).push_image(repo, "t", image)
    blob = registry.blob_path(image.layers[1].digest)
    data = bytearray(blob.read_bytes())
    data[600] ^= 0xFF  # inside the file's content: still a valid tar, wrong digest
    blob.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match=f"blob {image.layers[1].digest} failed verif"):
        pull(store, f"{registry.host}/{repo}:t")
    assert not store.content.has_layer(ik.sha256_digest(b"")) and store.list() == []
    assert visible_state(store.root)["layers"] in (
        [],
        [image.config.json()["rootfs"]["diff_ids"][0][7:]],
    )
    assert leftovers(store.root) == []


def test_garbage_gzip_is_refused(registry, store):
    image = small_image(b"garbage")
    repo = unique_repo()
    ik.RegistryClient(registry.url).push_image(repo, "t", image)
    blob = registry.blob_path(image.layers[1].digest)
    blob.write_bytes(b"\x1f\x8b" + os.urandom(len(blob.read_bytes()) - 2))
    with pytest.raises(VerificationError):
        pull(store, f"{registry.host}/{repo}:t")
    assert_empty(store)


def test_wrong_diff_id_is_refused(registry, store):
    honest = small_image(b"x")
    lie = ik.sha256_digest(b"not the layer")
    image = small_image(b"x", diff_ids=[honest.config.json()["rootfs"]["diff_ids"][0], lie])
    repo = unique_repo()
    ik.RegistryClient(registry.url).push_image(repo, "t", image)
    with pytest.raises(VerificationError, match=f"the config says {lie}"):
        pull(store, f"{registry.host}/{repo}:t")
    assert_empty(store)


def test_registry_down(store):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RegistryUnreachable, match=rf"127.0.0.1:{port}: connection refused"):
        pull(store, f"127.0.0.1:{port}/some/image")
    assert_empty(store)


def test_unknown_repository_and_tag(registry, store):
    repo = unique_repo()
    with pytest.raises(ManifestUnknown) as err:
        pull(store, f"{registry.host}/{repo}:v1")
    assert str(err.value) == f"manifest for {registry.host}/{repo}:v1 not found: manifest unknown"
    ik.RegistryClient(registry.url).push_image(repo, "v1", small_image())
    with pytest.raises(
        ManifestUnknown, match=f"manifest for {registry.host}/{repo}:nope not found"
    ):
        pull(store, f"{registry.host}/{repo}:nope")
    assert_empty(store)


def test_zstd_layers_are_refused_before_download(registry, store):
    image = small_image(b"z", fmt="oci")
    zstd = ik.Blob("application/vnd.oci.image.layer.v1.tar+zstd", b"\x28\xb5\x2f\xfd fake")
    layers = [image.layers[0].descriptor(), zstd.descriptor()]
    manifest = ik._manifest_blob("oci", image.config, layers)
    repo = unique_repo()
    client = ik.RegistryClient(registry.url)
    for blob in (image.config, image.layers[0], zstd):
        client.push_blob(repo, blob)
    client.push_manifest(repo, "t", manifest)
    with pytest.raises(UnsupportedManifest, match=r"zstd-compressed .* not supported yet"):
        pull(store, f"{registry.host}/{repo}:t")
    assert_empty(store)


# -- sharing and concurrency --------------------------------------------------------------------


def test_shared_layers_are_stored_once_and_freed_with_the_last_image(registry, store):
    repo = unique_repo()
    client = ik.RegistryClient(registry.url)
    first, second = small_image(b"first"), small_image(b"second")
    client.push_image(repo, "a", first)
    client.push_image(repo, "b", second)
    pull(store, f"{registry.host}/{repo}:a")
    _, messages = pull(store, f"{registry.host}/{repo}:b")
    shared = first.layers[0].digest[7:19]
    assert {"status": "Already exists", "id": shared} in messages
    assert len(visible_state(store.root)["layers"]) == 3
    events = store.remove(f"{registry.host}/{repo}:a")
    assert {"Deleted": first.config.digest} in events
    state = visible_state(store.root)
    assert len(state["layers"]) == 2 and len(state["images"]) == 1
    assert first.layers[1].digest[7:] not in state["blobs"]
    assert first.layers[0].digest[7:] in state["blobs"]
    store.remove(f"{registry.host}/{repo}:b")
    state = visible_state(store.root)
    assert state["layers"] == [] and state["blobs"] == [] and state["images"] == []


def test_concurrent_pulls_share_the_work(registry, store):
    repo = unique_repo()
    image = ik.build_image([ik.busybox_layer(), ik.random_layer(4 << 20, seed=7)])
    ik.RegistryClient(registry.url).push_image(repo, "t", image)
    results: list[list[dict]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(pull(store, f"{registry.host}/{repo}:t")[1])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    completes = sum(m["status"] == "Pull complete" for msgs in results for m in msgs)
    assert completes == 2, "each layer is downloaded exactly once"
    assert len(store.list()) == 1 and leftovers(store.root) == []


def test_concurrent_pulls_in_separate_processes(registry, tmp_path):
    repo = unique_repo()
    image = ik.build_image([ik.busybox_layer(), ik.random_layer(2 << 20, seed=8)])
    ik.RegistryClient(registry.url).push_image(repo, "t", image)
    root = tmp_path / "data"
    cmd = ["vmctl-agent", "pull", "--data-root", str(root), f"{registry.host}/{repo}:t"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert sum(o.count("Pull complete") for o in outputs) == 2
    assert json.loads((root / "image" / "repositories.json").read_text())["tags"] == {
        f"{registry.host}/{repo}:t": image.config.digest
    }


def test_same_layer_in_another_compression_reuses_the_unpacked_layer(registry, store):
    repo = unique_repo()
    client = ik.RegistryClient(registry.url)
    gz, plain = small_image(b"same"), small_image(b"same", compression="none")
    client.push_image(repo, "gz", gz)
    client.push_image(repo, "plain", plain)
    pull(store, f"{registry.host}/{repo}:gz")
    layer = store.content.layer_dir(gz.config.json()["rootfs"]["diff_ids"][1])
    inode = layer.stat().st_ino
    pull(store, f"{registry.host}/{repo}:plain")
    assert layer.stat().st_ino == inode, "the published layer was kept, not replaced"
    assert len(visible_state(store.root)["layers"]) == 2
    store.remove(f"{registry.host}/{repo}:gz")
    assert (layer / "etc" / "image-tag").read_bytes() == b"same"
