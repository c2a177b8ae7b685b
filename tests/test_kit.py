"""Prove the test kit itself against the real registry (and skopeo as an independent peer).

If these fail, every engine test built on the kit is suspect, so they run first and fast.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from urllib.parse import urlsplit

import imagekit as ik
import pytest
import requests
from registry import Registry, parse_scopes

# --------------------------------------------------------------------------- layers


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def test_tar_keeps_hostile_names_and_metadata() -> None:
    entries = [
        ik.file("../escape", b"x"),
        ik.file("/abs/file", b"y", uid=1000, gid=1000),
        ik.symlink("link", "/etc/passwd"),
        ik.hardlink("hard", "../escape"),
        ik.TarEntry("dev/null", "char", devmajor=1, devminor=3, mode=0o666),
        ik.TarEntry("fifo", "fifo"),
        ik.file("cap", b"", xattrs={"security.capability": "v", "user.k": "w"}),
        ik.whiteout("etc/gone"),
        ik.whiteout("top"),
        ik.opaque("var/cache/"),
    ]
    data = ik.tar_bytes(entries)
    assert data == ik.tar_bytes(entries)  # deterministic
    m = {i.name: i for i in _members(data)}
    assert list(m) == [
        "../escape",
        "/abs/file",
        "link",
        "hard",
        "dev/null",
        "fifo",
        "cap",
        "etc/.wh.gone",
        ".wh.top",
        "var/cache/.wh..wh..opq",
    ]
    assert (m["/abs/file"].uid, m["link"].linkname, m["link"].mode) == (1000, "/etc/passwd", 0o777)
    assert m["hard"].islnk() and m["dev/null"].ischr() and m["fifo"].isfifo()
    assert (m["dev/null"].devmajor, m["dev/null"].devminor) == (1, 3)
    assert m["cap"].pax_headers["SCHILY.xattr.user.k"] == "w"


def test_busybox_layer(busybox_tar: bytes) -> None:
    m = {i.name: i for i in _members(busybox_tar)}
    assert m["tmp"].mode == 0o1777 and m["bin/busybox"].mode == 0o755
    assert m["bin/sh"].linkname == "busybox"
    assert set(ik.DEFAULT_APPLETS) <= ik.busybox_applets()


def test_random_layer_is_sized_incompressible_and_deterministic() -> None:
    data = ik.random_layer(100_000, seed=7, files=3)
    files = [i for i in _members(data) if i.isfile()]
    assert sum(i.size for i in files) == 100_000 and len(files) == 3
    assert files[0].name.startswith("data/7/")
    assert data == ik.random_layer(100_000, seed=7, files=3)
    assert len(gzip.compress(data)) > 100_000


def test_build_image_is_deterministic_and_can_lie(busybox_tar: bytes) -> None:
    img = ik.build_image([busybox_tar], config={"Cmd": ["/bin/sh"]})
    assert img == ik.build_image([busybox_tar], config={"Cmd": ["/bin/sh"]})
    cfg = img.config.json()
    assert cfg["rootfs"]["diff_ids"] == [ik.sha256_digest(busybox_tar)]
    assert cfg["config"]["Cmd"] == ["/bin/sh"] and cfg["config"]["Env"][0].startswith("PATH=")
    assert gzip.decompress(img.layers[0].data) == busybox_tar
    liar = ik.build_image([busybox_tar], diff_ids=["sha256:" + "0" * 64])
    assert liar.config.json()["rootfs"]["diff_ids"] == ["sha256:" + "0" * 64]


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("fmt", "compression", "layer_type"),
    [
        ("docker", "gzip", ik.DOCKER_LAYER_GZIP),
        ("docker", "none", ik.DOCKER_LAYER_TAR),
        ("oci", "gzip", ik.OCI_LAYER_GZIP),
        ("oci", "none", ik.OCI_LAYER_TAR),
    ],
)
def test_push_and_fetch_image(
    registry: Registry, busybox_tar: bytes, fmt: str, compression: str, layer_type: str
) -> None:
    img = ik.build_image([busybox_tar, ik.random_layer(4096, 1)], fmt=fmt, compression=compression)
    client = registry.client()
    repo = f"kit/{fmt}-{compression}"
    assert client.push_image(repo, "v1", img) == img.digest
    resp = client.get_manifest(repo, "v1", accept=[img.manifest.media_type])
    assert resp.status_code == 200
    assert resp.headers["Docker-Content-Digest"] == img.digest
    assert resp.content == img.manifest.data
    assert [layer["mediaType"] for layer in resp.json()["layers"]] == [layer_type] * 2
    assert registry.blob_path(img.layers[0].digest).read_bytes() == img.layers[0].data


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_push_index_with_attestation(registry: Registry, busybox_tar: bytes, fmt: str) -> None:
    amd = ik.build_image([busybox_tar], fmt=fmt)
    arm = ik.build_image([busybox_tar], fmt=fmt, architecture="arm64", variant="v8")
    att, att_desc = ik.attestation_for(amd)
    arm_platform = {"os": "linux", "architecture": "arm64", "variant": "v8"}
    index = ik.build_index(
        [(amd, {"os": "linux", "architecture": "amd64"}), (arm, arm_platform)],
        fmt=fmt,
        extra=[att_desc],
    )
    client = registry.client()
    assert client.push_index(f"kit/multi-{fmt}", "latest", index, [amd, arm, att]) == index.digest
    resp = client.get_manifest(f"kit/multi-{fmt}", "latest")
    assert resp.headers["Docker-Content-Digest"] == index.digest
    manifests = resp.json()["manifests"]
    assert manifests[2]["platform"] == {"os": "unknown", "architecture": "unknown"}
    assert manifests[2]["annotations"]["vnd.docker.reference.digest"] == amd.digest
    by_digest = client.get_manifest(f"kit/multi-{fmt}", arm.digest)
    assert by_digest.content == arm.manifest.data


def test_token_auth(make_registry: Callable[..., Registry], busybox_tar: bytes) -> None:
    reg = make_registry(auth="token")
    img = ik.build_image([busybox_tar])
    with pytest.raises(requests.HTTPError) as denied:
        reg.client(authenticated=False).push_image("kit/tok", "v1", img)
    assert denied.value.response.status_code == 401
    wrong = ik.RegistryClient(reg.url, reg.username, "wrong")
    with pytest.raises(requests.HTTPError, match="401"):
        wrong.push_image("kit/tok", "v1", img)
    before = reg.token_requests
    assert reg.client().push_image("kit/tok", "v1", img) == img.digest
    assert reg.token_requests > before
    assert reg.token_server is not None
    scopes = parse_scopes(reg.token_server.scopes_seen)  # 2.8 orders actions at random
    assert "kit/tok" in [s["name"] for s in scopes if set(s["actions"]) == {"pull", "push"}]
    assert reg.client().get_manifest("kit/tok", "v1").status_code == 200


def test_htpasswd_auth(make_registry: Callable[..., Registry], busybox_tar: bytes) -> None:
    reg = make_registry(auth="htpasswd")
    img = ik.build_image([busybox_tar])
    with pytest.raises(requests.HTTPError, match="401"):
        reg.client(authenticated=False).push_image("kit/basic", "v1", img)
    with pytest.raises(requests.HTTPError, match="401"):
        ik.RegistryClient(reg.url, reg.username, "wrong").push_image("kit/basic", "v1", img)
    assert reg.client().push_image("kit/basic", "v1", img) == img.digest
    assert reg.token_requests == 0


def test_skopeo_agrees(registry: Registry, busybox_tar: bytes) -> None:
    img = ik.build_image([busybox_tar], fmt="oci", architecture="arm64", variant="v8")
    registry.client().push_image("kit/skopeo", "v1", img)
    ref = f"docker://{registry.host}/kit/skopeo:v1"
    info = json.loads(_skopeo("inspect", ref))
    assert info["Digest"] == img.digest
    assert (info["Os"], info["Architecture"]) == ("linux", "arm64")
    assert info["Layers"] == [layer.digest for layer in img.layers]
    assert _skopeo("inspect", "--config", "--raw", ref).encode() == img.config.data


def _skopeo(*args: str) -> str:
    """Run skopeo against the plain-HTTP loopback registry; fail with its stderr."""
    cmd = [ik.have_skopeo(), *args[:-1], "--tls-verify=false", args[-1]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


class _RelativeLocationClient(ik.RegistryClient):
    """Rewrites upload Locations to relative paths, as some registries send them."""

    def request(self, method: str, url: str, repo: str = "", **kw: object) -> requests.Response:
        resp = super().request(method, url, repo, **kw)
        if method == "POST" and "Location" in resp.headers:
            parts = urlsplit(resp.headers["Location"])
            resp.headers["Location"] = f"{parts.path}?{parts.query}"
        return resp


def test_push_follows_relative_location(registry: Registry) -> None:
    blob = ik.Blob(ik.OCI_LAYER_TAR, ik.tar_bytes([ik.file("hello", b"hi")]))
    client = _RelativeLocationClient(registry.url)
    client.push_blob("kit/relative", blob)
    assert client.blob_exists("kit/relative", blob.digest)
    start = registry.client().request("POST", "/v2/kit/relative/blobs/uploads/")
    assert "?" in start.headers["Location"]  # the registry's own one carries `_state=...`
