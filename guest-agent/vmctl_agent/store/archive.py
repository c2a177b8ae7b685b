"""`docker save` and `docker load`: images as one tar, in the format dockerd writes
(manifest.json, <config>.json, <layer>/layer.tar, repositories), so images move without a
registry.

Save streams each layer as the exact tar its diff_id names, decompressed from the stored blob.
Load spools the archive first (dockerd writes manifest.json last), checks every layer against
the config's diff_ids, then unpacks and records it as a pull would.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from vmctl_agent import atomic
from vmctl_agent.errors import AgentError, VerificationError
from vmctl_agent.store import manifest as mf
from vmctl_agent.store import reference as refs
from vmctl_agent.store.blobstream import BlobStream
from vmctl_agent.store.content import hex_of, remove_tree
from vmctl_agent.store.images import Image, ImageRecord, ImageStore
from vmctl_agent.store.layers import LayerExtractor

_CHUNK = 1 << 20
_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"


class ArchiveError(AgentError):
    """A `docker load` input that is not an image archive (answered with 400/500)."""


# -- save ----------------------------------------------------------------------------------------


def save(store: ImageStore, names: Iterable[str]) -> Iterator[bytes]:
    """The tar of `names`, streamed piece by piece."""
    images = [(name, store.get(name)) for name in names]
    manifest, repositories, seen = [], {}, set()
    for name, image in images:
        config_name = f"{hex_of(image.id)}.json"
        layer_names = [f"{hex_of(d)}/layer.tar" for d in image.record.diff_ids]
        tags = _tags_for(name, image)
        manifest.append({"Config": config_name, "RepoTags": tags, "Layers": layer_names})
        for tag in tags:
            repo, _, tag_name = tag.rpartition(":")
            repositories.setdefault(repo, {})[tag_name] = hex_of(image.record.diff_ids[-1])
        if image.id not in seen:
            seen.add(image.id)
            yield from _member(config_name, store.content.read_blob(image.id))
            yield from _layers(store, image)
    yield from _member("manifest.json", json.dumps(manifest).encode())
    yield from _member("repositories", json.dumps(repositories).encode())
    yield b"\0" * 1024


def _tags_for(name: str, image: Image) -> list[str]:
    try:
        ref = refs.parse(name)
    except AgentError:
        ref = None
    if ref is not None and ref.tag and str(ref) in image.repo_tags:
        return [ref.familiar()]
    return [refs.parse(t).familiar() for t in image.repo_tags]


def _layers(store: ImageStore, image: Image) -> Iterator[bytes]:
    for layer in image.record.layers:
        diff_id = layer["diff_id"]
        yield from _dir_member(hex_of(diff_id))
        yield from _member(f"{hex_of(diff_id)}/VERSION", b"1.0")
        info = tarfile.TarInfo(f"{hex_of(diff_id)}/layer.tar")
        info.size, info.mtime, info.mode = int(layer["size"]), int(time.time()), 0o644
        if not info.size:
            info.size = _uncompressed_size(store, layer["digest"])
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        yield from _uncompressed(store, layer["digest"], info.size)


def _uncompressed_size(store: ImageStore, digest: str) -> int:
    return sum(len(c) for c in _decompress(store.content.blob_path(digest)))


def _uncompressed(store: ImageStore, digest: str, size: int) -> Iterator[bytes]:
    written = 0
    for chunk in _decompress(store.content.blob_path(digest)):
        written += len(chunk)
        yield chunk
    if written != size:
        raise VerificationError(f"layer {digest} is {written} bytes, its record says {size}")
    yield b"\0" * (-size % 512)


def _decompress(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head != b"\x1f\x8b":
            while chunk := f.read(_CHUNK):
                yield chunk
            return
        decoder = zlib.decompressobj(wbits=31)
        while chunk := f.read(_CHUNK):
            yield decoder.decompress(chunk)
            while decoder.eof and decoder.unused_data:  # multi-member gzip
                rest, decoder = decoder.unused_data, zlib.decompressobj(wbits=31)
                yield decoder.decompress(rest)
        yield decoder.flush()


def _member(name: str, data: bytes) -> Iterator[bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    yield info.tobuf(format=tarfile.PAX_FORMAT) + data + b"\0" * (-len(data) % 512)


def _dir_member(name: str) -> Iterator[bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
    yield info.tobuf(format=tarfile.PAX_FORMAT)


# -- load ----------------------------------------------------------------------------------------


def load(store: ImageStore, body: io.RawIOBase) -> Iterator[str]:
    """Load every image in the archive `body`; yields "Loaded image: NAME" lines."""
    with store.content.gc_lock(shared=True):  # as a pull: nothing collects our new layers
        spool = store.content.tmp / f"load-{os.urandom(6).hex()}"
        spool.mkdir()
        try:
            _spool(body, spool)
            for entry in _manifest(spool):
                yield from _load_one(store, spool, entry)
        finally:
            remove_tree(spool)


def _spool(body, spool: Path) -> None:
    """Regular files of the archive into `spool`, names checked to stay inside it."""
    stream = _maybe_gunzip(body)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if member.isreg():
                    _write_member(tar, member, spool)
    except tarfile.TarError as e:
        raise ArchiveError(f"not an image archive (a tar from docker save): {e}") from e


def _maybe_gunzip(body):
    head = body.read(2)
    rest = _Prefixed(head, body)
    return gzip.GzipFile(fileobj=rest) if head == b"\x1f\x8b" else rest


class _Prefixed(io.RawIOBase):
    """`body` with bytes we already read put back in front."""

    def __init__(self, head: bytes, body) -> None:
        self._head, self._body = head, body

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            return data if size < 0 or size >= len(data) else data[:size]
        return self._body.read(size)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, spool: Path) -> None:
    name = os.path.normpath(member.name.lstrip("/"))
    if name.startswith("..") or name in (".", ""):
        raise ArchiveError(f"archive entry {member.name!r} points outside the archive")
    target = spool / name.replace("/", "__")
    source = tar.extractfile(member)
    with open(target, "wb") as out:
        while chunk := source.read(_CHUNK):
            out.write(chunk)


def _manifest(spool: Path) -> list[dict]:
    try:
        entries = json.loads((spool / "manifest.json").read_text())
    except FileNotFoundError:
        raise ArchiveError("not an image archive: it has no manifest.json") from None
    except ValueError as e:
        raise ArchiveError(f"manifest.json is not valid JSON: {e}") from None
    if not isinstance(entries, list):
        raise ArchiveError("manifest.json must hold a list")
    return entries


def _load_one(store: ImageStore, spool: Path, entry: dict) -> Iterator[str]:
    config_bytes = _spooled(spool, entry.get("Config", "")).read_bytes()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    layers = [_spooled(spool, name) for name in entry.get("Layers") or []]
    diff_ids = mf.parse_config(config_bytes, config_digest, len(layers))["rootfs"]["diff_ids"]
    store.content.put_blob(config_digest, config_bytes)
    pairs = zip(layers, diff_ids, strict=True)
    records = [_import_layer(store, path, diff_id) for path, diff_id in pairs]
    manifest_blob = _manifest_blob(config_digest, len(config_bytes), records)
    manifest_digest = "sha256:" + hashlib.sha256(manifest_blob).hexdigest()
    store.content.put_blob(manifest_digest, manifest_blob)
    record = ImageRecord(
        config_digest,
        manifest_digest,
        records,
        created=json.loads(config_bytes).get("created", ""),
        pulled=time.time(),
        boot_id=atomic.boot_id(),
    )
    tags = entry.get("RepoTags") or []
    store.add(record, refs.parse(tags[0]) if tags else None)
    for tag in tags[1:]:
        store.tag(config_digest, tag, stamp=False)  # dockerd's load sets no LastTagTime
    for tag in tags or [config_digest]:
        yield f"Loaded image: {tag}" if tags else f"Loaded image ID: {config_digest}"


def _spooled(spool: Path, name: str) -> Path:
    path = spool / os.path.normpath(name).replace("/", "__")
    if not name or not path.is_file():
        raise ArchiveError(f"the archive lacks {name!r}, which its manifest.json names")
    return path


def _import_layer(store: ImageStore, path: Path, diff_id: str) -> dict:
    """Verify the layer tar against its diff_id, keep it as a blob, and unpack it."""
    size = path.stat().st_size
    content = store.content
    with content.lock(diff_id):
        if not (content.has_layer(diff_id) and content.has_blob(diff_id)):
            with content.staging(diff_id) as work, open(path, "rb") as source:
                (work / "diff").mkdir()
                with open(work / "blob", "wb") as sink:
                    stream = BlobStream(source, sink, size)
                    LayerExtractor(str(work / "diff")).extract(stream)
                    digest, _ = stream.finish()
                if digest != diff_id:
                    raise VerificationError(
                        f"layer {path.name} does not match the image config: it is {digest}, "
                        f"the config says {diff_id}"
                    )
                content.commit_layer(work, diff_id, size, diff_id)
    return {
        "digest": diff_id,
        "diff_id": diff_id,
        "media_type": _LAYER_TAR,
        "compressed_size": size,
        "size": size,
    }


def _manifest_blob(config_digest: str, config_size: int, layers: list[dict]) -> bytes:
    """A schema 2 manifest for a loaded image, so it has a manifest like a pulled one."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mf.DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": [
                {
                    "mediaType": _LAYER_TAR,
                    "digest": layer["digest"],
                    "size": layer["compressed_size"],
                }
                for layer in layers
            ],
        },
        sort_keys=True,
    ).encode()
