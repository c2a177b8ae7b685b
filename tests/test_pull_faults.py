"""Pull faults a real registry will not produce on request, staged with a scripted server in
front of it: redirects to blob storage, schema 1, lies about digests and sizes, a connection
dropped mid-blob, a pull killed mid-download, a full disk, and registry mirrors."""

from __future__ import annotations

import hashlib
import json
import signal
import stat
import subprocess
import time
from pathlib import Path

import imagekit as ik
import pytest
from agentkit import leftovers, pull, small_image, unique_repo, visible_state
from fakeserver import FakeServer, Reply, Request, proxy_to
from vmctl_agent.errors import (
    ManifestUnknown,
    RegistryUnreachable,
    StoreError,
    UnsupportedManifest,
    VerificationError,
)
from vmctl_agent.store.auth import Credentials
from vmctl_agent.store.images import ImageStore

EMPTY = {"images": [], "layers": [], "blobs": [], "tags": []}


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "data" / "image")


@pytest.fixture
def pushed(registry) -> tuple[str, ik.Image]:
    repo = unique_repo("faults")
    image = small_image(repo.encode())
    ik.RegistryClient(registry.url).push_image(repo, "t", image)
    return repo, image


def test_redirect_to_blob_storage_drops_credentials(registry, store, pushed):
    repo, image = pushed
    blob_store = FakeServer(proxy_to(registry.url))
    auth = Credentials("user", "pw").basic()

    def front(request: Request) -> Reply:
        if request.headers.get("Authorization") != auth:
            return Reply(401, {"WWW-Authenticate": 'Basic realm="front"'})
        if "/blobs/" in request.path:
            return Reply(307, {"Location": blob_store.url + request.path})
        return proxy_to(registry.url)(request)

    with FakeServer(front) as server, blob_store:
        record, _ = pull(store, f"{server.host}/{repo}:t", credentials=Credentials("user", "pw"))
    assert record.id == image.config.digest
    assert blob_store.requests, "blobs came from the redirect target"
    assert all("Authorization" not in r.headers for r in blob_store.requests)


def test_schema1_is_refused_with_advice(store):
    body = json.dumps({"schemaVersion": 1, "name": "old/app", "tag": "v1", "fsLayers": []})
    media = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    server = FakeServer(lambda r: Reply(200, {"Content-Type": media}, body.encode()))
    with server, pytest.raises(UnsupportedManifest, match=r"schema 1 manifests .* re-push"):
        pull(store, f"{server.host}/old/app:v1")
    assert visible_state(store.root) == EMPTY


def test_manifest_that_does_not_match_its_digest(registry, store, pushed):
    repo, image = pushed
    upstream = proxy_to(registry.url)

    def tamper(request: Request) -> Reply:
        reply = upstream(request)
        if "/manifests/" in request.path:
            doc = json.loads(reply.body)
            doc["annotations"] = {"evil": "yes"}
            reply.body = json.dumps(doc).encode()
            reply.headers.pop("Content-Length", None)
        return reply

    with FakeServer(tamper) as server:
        with pytest.raises(VerificationError, match="manifest digest mismatch"):
            pull(store, f"{server.host}/{repo}@{image.digest}")
        with pytest.raises(VerificationError, match="manifest digest mismatch"):
            pull(store, f"{server.host}/{repo}:t")  # the Docker-Content-Digest header vouches
    assert visible_state(store.root) == EMPTY


def test_blob_larger_than_its_descriptor_is_cut_off(registry, store, pushed):
    repo, image = pushed
    upstream = proxy_to(registry.url)
    target = image.layers[1].digest

    def pad(request: Request) -> Reply:
        reply = upstream(request)
        if request.path.endswith(target):
            reply.body = reply.body + b"\0" * (1 << 20)
            reply.headers.pop("Content-Length", None)
        return reply

    server = FakeServer(pad)
    with server, pytest.raises(VerificationError, match=r"larger than the \d+ bytes its descr"):
        pull(store, f"{server.host}/{repo}:t")
    assert visible_state(store.root) == EMPTY and leftovers(store.root) == []


def test_connection_dropped_mid_blob(registry, store, pushed):
    repo, image = pushed
    upstream = proxy_to(registry.url)
    target = image.layers[0].digest

    def drop(request: Request) -> Reply:
        reply = upstream(request)
        if request.path.endswith(target):
            reply.headers["Content-Length"] = str(len(reply.body))
            reply.body = iter([reply.body[: len(reply.body) // 2]])
        return reply

    server = FakeServer(drop)
    with server, pytest.raises(RegistryUnreachable, match="lost while downloading"):
        pull(store, f"{server.host}/{repo}:t")
    assert visible_state(store.root) == EMPTY and leftovers(store.root) == []


def test_killed_pull_leaves_nothing_visible_and_the_next_pull_completes(registry, tmp_path):
    repo = unique_repo("killed")
    image = ik.build_image([ik.busybox_layer(), ik.random_layer(3 << 20, seed=11)])
    ik.RegistryClient(registry.url).push_image(repo, "t", image)
    root = tmp_path / "data"
    with FakeServer(proxy_to(registry.url, bytes_per_second=1 << 20)) as slow:
        cmd = ["vmctl-agent", "pull", "--data-root", str(root), f"{slow.host}/{repo}:t"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            _wait_for_staged_bytes(root / "image" / "tmp", proc)
        finally:  # killed and reaped even when the wait fails: no zombie for later tests
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    state = visible_state(root / "image")
    assert state["images"] == [] and state["tags"] == []
    assert image.layers[1].digest[7:] not in state["blobs"]
    assert leftovers(root / "image"), "the killed pull's work in progress is still there"
    done = subprocess.run(
        ["vmctl-agent", "pull", "--data-root", str(root), f"{registry.host}/{repo}:t"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert leftovers(root / "image") == [], "the retry cleared the killed pull's leftovers"
    layer = root / "image" / "layers" / image.config.json()["rootfs"]["diff_ids"][1][7:]
    files = sorted((layer / "diff" / "data" / "11").iterdir())
    assert sum(f.stat().st_size for f in files) == 3 << 20


def test_leftovers_of_a_killed_pull_are_collected(registry, tmp_path):
    """Even if that image is never pulled again: disk space comes back."""
    store = ImageStore(tmp_path / "image")
    (store.content.tmp / ("ab" * 32 + ".deadbeef")).mkdir()
    (store.content.tmp / ("ab" * 32 + ".deadbeef") / "blob").write_bytes(b"x" * 1000)
    assert store.collect_garbage(wait=False)
    assert leftovers(store.root) == []


def test_a_layer_published_but_never_recorded_is_not_trusted(registry, tmp_path):
    """A crash between publishing a layer and syncing may leave it torn; no record names it,
    so the next pull collects it and downloads it again instead of reusing it."""
    repo = unique_repo("torn")
    image = small_image(b"torn")
    ik.RegistryClient(registry.url).push_image(repo, "t", image)
    store = ImageStore(tmp_path / "image")
    pull(store, f"{registry.host}/{repo}:t")
    (store.root / "images" / f"{image.config.digest[7:]}.json").unlink()  # as if we crashed
    torn = store.content.layer_dir(image.config.json()["rootfs"]["diff_ids"][1])
    (torn / "etc" / "image-tag").write_bytes(b"")
    _, messages = pull(store, f"{registry.host}/{repo}:t")
    assert sum(m["status"] == "Pull complete" for m in messages) == 2
    assert (torn / "etc" / "image-tag").read_bytes() == b"torn"


def _rewrite(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_a_pull_is_durable_when_it_returns(registry, tmp_path, pushed):
    """The VM's power may be cut the moment a pull has answered: its record and layers are
    marked durable (synced) before it does, and the record never exists unsynced."""
    repo, image = pushed
    store = ImageStore(tmp_path / "image")
    pull(store, f"{registry.host}/{repo}:t")
    record = store.root / "images" / f"{image.config.digest[7:]}.json"
    layer_meta = [
        store.root / "layers" / d[7:] / "layer.json"
        for d in image.config.json()["rootfs"]["diff_ids"]
    ]
    assert json.loads(record.read_text())["boot_id"] == ""
    assert [json.loads(m.read_text())["boot_id"] for m in layer_meta] == ["", ""]


def test_an_image_pulled_just_before_a_crash_is_forgotten_not_trusted(registry, tmp_path, pushed):
    """Written in an earlier boot and never synced: it may be torn, so it is dropped whole."""
    repo, image = pushed
    store = ImageStore(tmp_path / "image")
    pull(store, f"{registry.host}/{repo}:t")
    _rewrite(store.root / "images" / f"{image.config.digest[7:]}.json", boot_id="earlier-boot")
    for diff_id in image.config.json()["rootfs"]["diff_ids"]:
        _rewrite(store.root / "layers" / diff_id[7:] / "layer.json", boot_id="earlier-boot")
    assert store.collect_garbage()
    assert visible_state(store.root)["layers"] == [] and store.list() == []
    assert json.loads((store.root / "repositories.json").read_text()) == {"tags": {}}
    _, messages = pull(store, f"{registry.host}/{repo}:t")
    assert sum(m["status"] == "Pull complete" for m in messages) == 2


def test_a_layer_from_an_earlier_boot_is_not_reused(registry, tmp_path, pushed):
    """Even when collection cannot run (another pull holds the lock), has_layer refuses it."""
    repo, image = pushed
    store = ImageStore(tmp_path / "image")
    pull(store, f"{registry.host}/{repo}:t")
    diff_id = image.config.json()["rootfs"]["diff_ids"][1]
    assert store.content.has_layer(diff_id)
    _rewrite(store.root / "layers" / diff_id[7:] / "layer.json", boot_id="earlier-boot")
    assert not store.content.has_layer(diff_id)


def test_store_is_private_to_root(tmp_path):
    store = ImageStore(tmp_path / "image")
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700


def test_only_sha256_digests(store):
    with pytest.raises(UnsupportedManifest, match="use sha256"):
        pull(store, "127.0.0.1:1/x@sha512:" + "a" * 128)


def _wait_for_staged_bytes(tmp: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(_size(blob) > 256 << 10 for blob in tmp.glob("*/blob")):
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the pull never started writing a layer")


def _size(blob: Path) -> int:
    """0 for a blob the pull finished and moved into place since the glob saw it."""
    try:
        return blob.stat().st_size
    except FileNotFoundError:
        return 0


def test_full_disk_is_reported_and_leaves_nothing(registry, tmp_path):
    repo = unique_repo("full")
    image = ik.build_image([ik.busybox_layer(), ik.random_layer(6 << 20, seed=12)])
    ik.RegistryClient(registry.url).push_image(repo, "t", image)
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        store = ImageStore(small / "image")
        with pytest.raises(StoreError, match=r"no space left on device .* free space"):
            pull(store, f"{registry.host}/{repo}:t")
        assert visible_state(store.root) == EMPTY and leftovers(store.root) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_mirror_serves_docker_hub_names(registry, store):
    repo = "library/mirrored-" + hashlib.sha1(str(time.time()).encode()).hexdigest()[:8]
    image = small_image(b"mirror")
    ik.RegistryClient(registry.url).push_image(repo, "latest", image)
    name = repo.removeprefix("library/")
    record, messages = pull(store, name, mirrors=("http://127.0.0.1:1", registry.url))
    assert record.id == image.config.digest
    assert store.get(name).id == image.config.digest
    assert messages[-1] == {"status": f"Status: Downloaded newer image for {name}:latest"}


def test_mirrors_down_and_hub_unreachable(store):
    with pytest.raises(RegistryUnreachable):
        pull(store, "busybox", mirrors=("http://127.0.0.1:1",))
    assert visible_state(store.root) == EMPTY


def test_not_on_the_mirror_and_the_hub_unreachable(registry, store):
    """Offline with a mirror: the answer names the mirror's not-found, not only the Hub."""
    with pytest.raises(ManifestUnknown) as err:
        pull(store, "not-on-the-mirror", mirrors=(registry.url,))
    message = str(err.value)
    assert "not-on-the-mirror:latest not found" in message and "registry-1.docker.io" in message
