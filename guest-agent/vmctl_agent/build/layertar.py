"""A directory of changes (an overlay's upper directory) as an OCI layer, stored in the image
store as a pulled layer is: the tar written in lexical order with owners, modes, times, xattrs
and hard links; overlay whiteouts (0/0 character devices, the opaque xattr) turned into OCI
ones (`.wh.NAME`, `.wh..wh..opq`); gzip-compressed, hashed, then unpacked through the same
extractor and checks a pull uses, so the stored layer is exactly what its tar says.

An empty change set is the empty tar (1,024 zero bytes, as Go writes it): dockerd records
such a step as an empty layer in the history and adds no layer, and so do we.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

from vmctl_agent.build import layerdir
from vmctl_agent.errors import VerificationError
from vmctl_agent.store.blobstream import BlobStream
from vmctl_agent.store.content import ContentStore
from vmctl_agent.store.layers import OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX, LayerExtractor

GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
EMPTY_TAR = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
_CHUNK = 1 << 20
_NODES = {
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
}


class _Hashing:
    """A file that hashes and counts what goes through it."""

    def __init__(self, sink) -> None:
        self.sink, self.digest, self.size = sink, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


def tar_chunks(root: Path, skip=lambda path, info: False) -> Iterator[bytes]:
    """The layer tar of directory `root`; `skip(path, lstat)` leaves entries out (and what
    is under them)."""
    links: dict[tuple[int, int], str] = {}
    for path, info in _walk(root, "", skip):
        yield from _entry(root, path, info, links)
    yield b"\0" * 1024


def _walk(root: Path, prefix: str, skip) -> Iterator[tuple[str, os.stat_result]]:
    with os.scandir(root / prefix if prefix else root) as entries:
        names = sorted(e.name for e in entries)
    for name in names:
        path = f"{prefix}{name}"
        info = os.lstat(root / path)
        if skip(path, info):
            continue
        yield path, info
        if stat.S_ISDIR(info.st_mode):
            yield from _walk(root, path + "/", skip)


def _entry(root: Path, path: str, info: os.stat_result, links: dict) -> Iterator[bytes]:
    full = root / path
    if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
        parent, _, name = path.rpartition("/")
        whiteout = f"{parent}/{WHITEOUT_PREFIX}{name}" if parent else WHITEOUT_PREFIX + name
        yield _header(whiteout, info, tarfile.REGTYPE, mode=0o600)  # as dockerd writes it
        return
    if stat.S_ISDIR(info.st_mode):
        yield _header(path + "/", info, tarfile.DIRTYPE, xattrs=_xattrs(full))
        if _opaque(full):
            marker = f"{path}/{OPAQUE_MARKER}"
            yield _header(marker, info, tarfile.REGTYPE, mode=stat.S_IMODE(info.st_mode))
        return
    if stat.S_ISREG(info.st_mode):
        yield from _file(full, path, info, links)
    elif stat.S_ISLNK(info.st_mode):
        yield _header(path, info, tarfile.SYMTYPE, linkname=os.readlink(full))
    elif stat.S_IFMT(info.st_mode) in _NODES:
        yield _header(path, info, _NODES[stat.S_IFMT(info.st_mode)], xattrs=_xattrs(full))
    # sockets are not carried in layers (as in Docker)


def _file(full: Path, path: str, info: os.stat_result, links: dict) -> Iterator[bytes]:
    key = (info.st_dev, info.st_ino)
    if info.st_nlink > 1 and key in links:
        yield _header(path, info, tarfile.LNKTYPE, linkname=links[key])
        return
    links[key] = path
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as source:
        yield _header(path, info, tarfile.REGTYPE, size=info.st_size, xattrs=_xattrs(full))
        remaining = info.st_size
        while remaining:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                raise VerificationError(f"{path} shrank while it was being written to a layer")
            remaining -= len(chunk)
            yield chunk
    yield b"\0" * (-info.st_size % 512)


def _header(name: str, info: os.stat_result, kind: bytes, **extra) -> bytes:
    header = tarfile.TarInfo(name)
    header.type = kind
    # Go's archive/tar keeps the file type bits in the mode (0o100644, 0o40755), as Docker's
    # layers have them.
    header.mode = extra.get("mode", stat.S_IMODE(info.st_mode) | stat.S_IFMT(info.st_mode))
    header.uid, header.gid = info.st_uid, info.st_gid
    header.mtime = int(info.st_mtime)
    header.size = extra.get("size", 0)
    header.linkname = extra.get("linkname", "")
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        header.devmajor, header.devminor = os.major(info.st_rdev), os.minor(info.st_rdev)
    for key, value in extra.get("xattrs", ()):
        header.pax_headers["SCHILY.xattr." + key] = value.decode("utf-8", "surrogateescape")
    raw = header.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")
    return _full_mode(raw, header.mode)


def _full_mode(raw: bytes, mode: int) -> bytes:
    """Python's tarfile keeps only the permission bits of a mode; Go's (Docker's) keeps the
    type bits too, so the last header block gets them back, its checksum made again."""
    if mode <= 0o7777:
        return raw
    block = bytearray(raw[-512:])
    block[100:108] = b"%07o\0" % mode
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return raw[:-512] + bytes(block)


def _xattrs(path: Path) -> list[tuple[str, bytes]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    found = []
    for name in sorted(names):
        if name.startswith("trusted.overlay.") or not name.startswith(("security.", "user.")):
            continue
        try:
            found.append((name, os.getxattr(path, name, follow_symlinks=False)))
        except OSError:
            continue
    return found


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def store_layer(
    content: ContentStore, root: Path, skip=lambda p, i: False, *, adopt: bool = False
) -> dict | None:
    """Store the changes in `root` as a layer; its entry for an image record, or None if
    there are no changes. With `adopt`, `root` itself becomes the layer's directory when it
    can be (layerdir.py; it is then gone from where it was), else the tar is unpacked as a
    pull unpacks it. Call with the store's gc lock held shared (as a pull does)."""
    spool = content.tmp / f"build-layer-{os.urandom(6).hex()}.tar.gz"
    try:
        if adopt:
            layerdir.prune(root, skip)
        diff_id, size, blob_digest, compressed = _write_gzip(root, spool, skip)
        if diff_id == EMPTY_TAR:
            return None
        with content.lock(diff_id):
            taken = root if adopt else None
            _publish(content, spool, (diff_id, size, blob_digest, compressed), taken)
    finally:
        spool.unlink(missing_ok=True)
    return {
        "digest": blob_digest,
        "diff_id": diff_id,
        "media_type": GZIP_LAYER,
        "compressed_size": compressed,
        "size": content.layer_size(diff_id),
    }


def _write_gzip(root: Path, spool: Path, skip) -> tuple[str, int, str, int]:
    """The layer's tar, gzipped into `spool`, both hashed as they are written: (diff_id,
    tar size, blob digest, blob size)."""
    with open(spool, "wb") as raw:
        blob = _Hashing(raw)
        # Go's default level (6), as dockerd compresses a layer to push it: level 9 takes
        # twice the time for a few percent
        with gzip.GzipFile("", "wb", compresslevel=6, fileobj=blob, mtime=0) as zipped:
            tar = _Hashing(zipped)
            for chunk in tar_chunks(root, skip):
                tar.write(chunk)
    return _digest(tar), tar.size, _digest(blob), blob.size


def _digest(hashing: _Hashing) -> str:
    return "sha256:" + hashing.digest.hexdigest()


def _publish(content, spool: Path, layer: tuple, root: Path | None) -> None:
    """Under the layer's lock: commit it (`root` moved into place if it conforms, else the
    tar unpacked), unless the store has it already."""
    diff_id, size, blob, compressed = layer
    if content.has_layer(diff_id):
        if not content.has_blob(blob):
            os.replace(spool, content.blob_path(blob))
        return
    with content.staging(diff_id) as work:
        os.replace(spool, work / "blob")
        if root is None or not layerdir.conform(root) or not _moved(root, work / "diff"):
            _unpack(work, blob, diff_id, compressed)
        content.commit_layer(work, diff_id, size, blob)


def _moved(root: Path, target: Path) -> bool:
    try:
        os.rename(root, target)
    except OSError as e:
        if e.errno == errno.EXDEV:
            return False  # another filesystem: unpacked instead
        raise
    return True


def _unpack(work: Path, blob: str, diff_id: str, compressed: int) -> None:
    (work / "diff").mkdir()
    with open(work / "blob", "rb") as source:
        stream = BlobStream(source, None, compressed)
        LayerExtractor(str(work / "diff")).extract(stream)
        got_blob, got_diff = stream.finish()
    if (got_blob, got_diff) != (blob, diff_id):
        raise VerificationError(f"layer {diff_id} changed while it was being stored")
