"""Build OCI/Docker images in memory and push them to a registry over its HTTP API.

There is no docker daemon on the test machines, so tests make their own images: exact tar
layers (hostile names included), deterministic blobs, manifests, indexes, and a small pusher
that speaks the distribution API (anonymous, Basic, or Bearer-token auth).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import random
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

BUSYBOX = Path("/bin/busybox")
DEFAULT_APPLETS = (
    "sh", "echo", "true", "false", "cat", "ls", "sleep", "id", "env", "pwd", "hostname",
    "ps", "mount", "touch", "rm", "mkdir", "uname", "head", "dd", "yes", "wc",
)  # fmt: skip
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GZIP_LEVEL = 6  # deterministic either way; 9 is needlessly slow on 100 MB benchmark layers

# Media types.
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
IN_TOTO = "application/vnd.in-toto+json"
MANIFEST_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

_MEDIA = {
    "docker": {
        "manifest": DOCKER_MANIFEST,
        "index": DOCKER_MANIFEST_LIST,
        "config": DOCKER_CONFIG,
        "gzip": DOCKER_LAYER_GZIP,
        "none": DOCKER_LAYER_TAR,
    },
    "oci": {
        "manifest": OCI_MANIFEST,
        "index": OCI_INDEX,
        "config": OCI_CONFIG,
        "gzip": OCI_LAYER_GZIP,
        "none": OCI_LAYER_TAR,
    },
}

_TAR_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}
_DEFAULT_MODES = {"dir": 0o755, "symlink": 0o777}


# --------------------------------------------------------------------------- tar layers


@dataclass(frozen=True)
class TarEntry:
    """One tar member, described exactly (no normalisation) so tests can build hostile layers."""

    name: str
    type: str = "file"
    data: bytes = b""
    linkname: str = ""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: int = 1_700_000_000
    xattrs: dict[str, str] = field(default_factory=dict)
    devmajor: int = 0
    devminor: int = 0

    def tarinfo(self) -> tarfile.TarInfo:
        """The TarInfo for this entry; xattrs become PAX `SCHILY.xattr.*` records."""
        info = tarfile.TarInfo(self.name)
        info.type = _TAR_TYPES[self.type]
        info.size = len(self.data) if self.type == "file" else 0
        info.linkname = self.linkname
        info.mode = self.mode if self.mode is not None else _DEFAULT_MODES.get(self.type, 0o644)
        info.uid, info.gid, info.mtime = self.uid, self.gid, self.mtime
        info.devmajor, info.devminor = self.devmajor, self.devminor
        info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in sorted(self.xattrs.items())}
        return info


def file(name: str, data: bytes = b"", mode: int = 0o644, **kw: Any) -> TarEntry:
    """A regular file."""
    return TarEntry(name, "file", data=data, mode=mode, **kw)


def directory(name: str, **kw: Any) -> TarEntry:
    """A directory (0755 unless `mode` is given)."""
    return TarEntry(name, "dir", **kw)


def symlink(name: str, target: str, **kw: Any) -> TarEntry:
    """A symlink `name -> target`; the target is stored verbatim (may be absolute or `..`)."""
    return TarEntry(name, "symlink", linkname=target, **kw)


def hardlink(name: str, target: str, **kw: Any) -> TarEntry:
    """A hardlink to `target`, a member name earlier in the layer (or a hostile one)."""
    return TarEntry(name, "hardlink", linkname=target, **kw)


def whiteout(path: str) -> TarEntry:
    """An AUFS-style whiteout deleting `path` from lower layers: `dir/.wh.base`."""
    parent, _, base = path.rstrip("/").rpartition("/")
    return file(f"{parent}/.wh.{base}" if parent else f".wh.{base}")


def opaque(dir_: str) -> TarEntry:
    """An opaque-directory marker hiding everything below `dir_` in lower layers."""
    return file(f"{dir_.rstrip('/')}/.wh..wh..opq")


def tar_bytes(entries: Iterable[TarEntry]) -> bytes:
    """An uncompressed PAX tar of `entries`, in order, names as given; same input, same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            tar.addfile(entry.tarinfo(), io.BytesIO(entry.data) if entry.type == "file" else None)
    return buf.getvalue()


@functools.cache
def _busybox_bytes() -> bytes:
    """The static busybox binary; a missing one is a setup error, never a skip."""
    if not BUSYBOX.is_file():
        raise RuntimeError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    return BUSYBOX.read_bytes()


def busybox_layer(applets: Sequence[str] = DEFAULT_APPLETS) -> bytes:
    """A minimal runnable rootfs: static busybox, applet symlinks, passwd/group."""
    dirs = [directory(d) for d in ("bin", "etc", "proc", "sys", "dev", "root")]
    passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    return tar_bytes(
        [
            *dirs,
            directory("tmp", mode=0o1777),
            file("bin/busybox", _busybox_bytes(), mode=0o755),
            *(symlink(f"bin/{a}", "busybox") for a in applets),
            file("etc/passwd", passwd),
            file("etc/group", b"root:x:0:\nnobody:x:65534:\n"),
        ]
    )


def busybox_applets() -> set[str]:
    """Applets this busybox build really has (to check `busybox_layer` arguments)."""
    _busybox_bytes()
    out = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def random_layer(size: int, seed: int, files: int = 8) -> bytes:
    """`files` incompressible files totalling `size` bytes under `data/<seed>/` (benchmarks)."""
    data = random.Random(seed).randbytes(size)
    step = size // files
    bounds = [i * step for i in range(files)] + [size]
    chunks = [data[bounds[i] : bounds[i + 1]] for i in range(files)]
    entries = [directory("data"), directory(f"data/{seed}")]
    entries += [file(f"data/{seed}/file-{i:03d}", c) for i, c in enumerate(chunks)]
    return tar_bytes(entries)


# --------------------------------------------------------------------------- blobs & images


def sha256_digest(data: bytes) -> str:
    """The `sha256:<hex>` content digest used everywhere in the distribution spec."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON so that the same image always has the same digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes plus their media type."""

    media_type: str
    data: bytes

    @functools.cached_property
    def digest(self) -> str:
        """`sha256:<hex>`; cached because benchmark blobs are ~100 MB."""
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        """Length in bytes."""
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """An OCI descriptor; `extra` adds e.g. `platform` or `annotations`."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}

    def json(self) -> Any:
        """The blob parsed as JSON (for manifests and configs)."""
        return json.loads(self.data)


@dataclass(frozen=True)
class Image:
    """A single-platform image: manifest, config and layers (compressed as pushed)."""

    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]

    def blobs(self) -> tuple[Blob, ...]:
        """Everything to upload before the manifest."""
        return (self.config, *self.layers)

    @property
    def digest(self) -> str:
        """The manifest digest (what `image@sha256:...` refers to)."""
        return self.manifest.digest


def _compress(tar: bytes, compression: str) -> bytes:
    """Gzip with mtime=0 so identical tars give identical blobs."""
    if compression == "none":
        return tar
    if compression == "gzip":
        return gzip.compress(tar, compresslevel=GZIP_LEVEL, mtime=0)
    raise ValueError(f"unknown compression {compression!r}")


def _manifest_blob(fmt: str, config: Blob, layers: Sequence[dict[str, Any]]) -> Blob:
    """An image manifest referencing `config` and the given layer descriptors."""
    media = _MEDIA[fmt]["manifest"]
    doc = {"schemaVersion": 2, "mediaType": media, "config": config.descriptor(), "layers": layers}
    return Blob(media, canonical_json(doc))


def build_image(
    layer_tars: Sequence[bytes],
    *,
    fmt: str = "docker",
    compression: str = "gzip",
    os: str = "linux",
    architecture: str = "amd64",
    variant: str | None = None,
    config: dict[str, Any] | None = None,
    diff_ids: list[str] | None = None,
    created: str = "2024-01-01T00:00:00Z",
    history: list[dict[str, Any]] | None = None,
) -> Image:
    """An image from uncompressed layer tars.

    `config` is merged over a default `{"Env": [PATH=...]}` container config; `diff_ids`
    overrides the honest ones so tests can build an image that lies about its layers;
    `history` replaces the default one line per layer (a builder's, with empty_layer lines).
    """
    media = _MEDIA[fmt]
    layers = tuple(Blob(media[compression], _compress(t, compression)) for t in layer_tars)
    doc: dict[str, Any] = {"architecture": architecture, "os": os, "created": created}
    if variant:
        doc["variant"] = variant
    doc["config"] = {"Env": [DEFAULT_PATH], **(config or {})}
    honest = [sha256_digest(t) for t in layer_tars]
    doc["rootfs"] = {"type": "layers", "diff_ids": honest if diff_ids is None else diff_ids}
    doc["history"] = history or [
        {"created": created, "created_by": f"imagekit layer {i}"} for i in range(len(layer_tars))
    ]
    cfg = Blob(media["config"], canonical_json(doc))
    return Image(_manifest_blob(fmt, cfg, [b.descriptor() for b in layers]), cfg, layers)


def build_index(
    entries: Sequence[tuple[Image, dict[str, Any]]],
    *,
    fmt: str = "docker",
    extra: Sequence[dict[str, Any]] = (),
) -> Blob:
    """A manifest list / OCI index of `(image, platform)` entries plus raw `extra` descriptors."""
    media = _MEDIA[fmt]["index"]
    manifests = [img.manifest.descriptor(platform=dict(p)) for img, p in entries]
    doc = {"schemaVersion": 2, "mediaType": media, "manifests": [*manifests, *extra]}
    return Blob(media, canonical_json(doc))


def attestation_for(image: Image) -> tuple[Image, dict[str, Any]]:
    """A BuildKit-style attestation manifest for `image`, and its index descriptor.

    Push the returned Image alongside the platform images (the registry checks that every
    index entry exists) and pass the descriptor in `build_index(..., extra=[desc])`.
    Engines must skip such entries (platform unknown/unknown) when picking a platform.
    """
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{"name": "imagekit", "digest": {"sha256": image.digest[7:]}}],
        "predicate": {"spdxVersion": "SPDX-2.3"},
    }
    layer = Blob(IN_TOTO, canonical_json(statement))
    cfg_doc = {
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    }
    cfg = Blob(OCI_CONFIG, canonical_json(cfg_doc))
    ann = {"in-toto.io/predicate-type": "https://spdx.dev/Document"}
    att = Image(_manifest_blob("oci", cfg, [layer.descriptor(annotations=ann)]), cfg, (layer,))
    desc = att.manifest.descriptor(
        platform={"os": "unknown", "architecture": "unknown"},
        annotations={
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": image.digest,
        },
    )
    return att, desc


# --------------------------------------------------------------------------- pushing


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="x",service="y"` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class RegistryClient:
    """A test-side pusher for the distribution HTTP API with Basic and Bearer-token auth.

    Deliberately independent of the engine under test, so a push that works here and fails
    there points at the engine.
    """

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.creds = (username, password) if username is not None else None
        self.session = requests.Session()
        self._auth: dict[str, str] = {}  # repo (or "" for /v2/) -> Authorization header

    # -- transport

    def request(self, method: str, url: str, repo: str = "", **kw: Any) -> requests.Response:
        """One request; on a 401 authenticate per its challenge and retry once."""
        url = urljoin(self.base_url + "/", url)
        resp = self._send(method, url, repo, **kw)
        challenge = resp.headers.get("WWW-Authenticate")
        if resp.status_code == 401 and challenge and self._authenticate(challenge, repo):
            resp = self._send(method, url, repo, **kw)
        return resp

    def _send(self, method: str, url: str, repo: str, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if repo in self._auth:
            headers["Authorization"] = self._auth[repo]
        return self.session.request(method, url, headers=headers, timeout=60, **kw)

    def _authenticate(self, challenge: str, repo: str) -> bool:
        """Answer a Basic challenge with credentials, a Bearer one with a fetched token."""
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic" and self.creds is not None:
            req = requests.Request("GET", "http://x", auth=self.creds).prepare()
            self._auth[repo] = req.headers["Authorization"]
            return True
        if scheme == "bearer":
            self._auth[repo] = "Bearer " + self._fetch_token(params)
            return True
        return False

    def _fetch_token(self, params: dict[str, str]) -> str:
        """GET the realm with service/scope; HTTPError (e.g. 401) if the token server refuses."""
        query = {k: params[k] for k in ("service", "scope") if k in params}
        resp = requests.get(params["realm"], params=query, auth=self.creds, timeout=30)
        resp.raise_for_status()
        body = resp.json()
        return body.get("token") or body["access_token"]

    # -- API

    def ping(self) -> requests.Response:
        """GET /v2/ (authenticating if challenged)."""
        return self.request("GET", "/v2/")

    def blob_exists(self, repo: str, digest: str) -> bool:
        """HEAD the blob."""
        resp = self.request("HEAD", f"/v2/{repo}/blobs/{digest}", repo)
        if resp.status_code not in (200, 404):
            resp.raise_for_status()
        return resp.status_code == 200

    def push_blob(self, repo: str, blob: Blob) -> None:
        """Monolithic upload (POST then PUT ?digest=), skipped if the blob is already there."""
        if self.blob_exists(repo, blob.digest):
            return
        start = self.request("POST", f"/v2/{repo}/blobs/uploads/", repo)
        _check(start, 202)
        location = urljoin(start.url, start.headers["Location"])  # may be relative or absolute
        put = self.request(
            "PUT",
            location,
            repo,
            params={"digest": blob.digest},
            data=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        _check(put, 201)

    def push_manifest(self, repo: str, ref: str, blob: Blob) -> str:
        """PUT a manifest or index under a tag or digest; returns the registry's digest."""
        resp = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            repo,
            data=blob.data,
            headers={"Content-Type": blob.media_type},
        )
        _check(resp, 201)
        return resp.headers.get("Docker-Content-Digest", blob.digest)

    def push_image(self, repo: str, tag: str, image: Image) -> str:
        """Config, layers, then the manifest under `tag`; returns the manifest digest."""
        for blob in image.blobs():
            self.push_blob(repo, blob)
        return self.push_manifest(repo, tag, image.manifest)

    def push_index(self, repo: str, tag: str, index: Blob, images: Iterable[Image]) -> str:
        """Each image by digest (the registry requires them first), then the index under `tag`."""
        for image in images:
            self.push_image(repo, image.digest, image)
        return self.push_manifest(repo, tag, index)

    def get_manifest(
        self, repo: str, ref: str, accept: Sequence[str] = MANIFEST_TYPES
    ) -> requests.Response:
        """GET a manifest with an Accept header (raw response: tests inspect status/headers)."""
        return self.request(
            "GET", f"/v2/{repo}/manifests/{ref}", repo, headers={"Accept": ", ".join(accept)}
        )

    def delete_manifest(self, repo: str, digest: str) -> None:
        """DELETE a manifest by digest (the registry refuses deletes by tag)."""
        _check(self.request("DELETE", f"/v2/{repo}/manifests/{digest}", repo), 202)


def _check(resp: requests.Response, expected: int) -> None:
    """Raise HTTPError (with the body, for diagnosis) unless the status is `expected`."""
    if resp.status_code != expected:
        raise requests.HTTPError(
            f"{resp.request.method} {resp.url}: expected {expected}, got {resp.status_code}: "
            f"{resp.text[:500]}",
            response=resp,
        )


def have_skopeo() -> str:
    """Path to skopeo, or a clear failure naming the apt package (never a silent skip)."""
    path = shutil.which("skopeo")
    if path is None:
        raise RuntimeError("skopeo is missing: apt-get install skopeo")
    return path
