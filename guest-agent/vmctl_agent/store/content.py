"""The content-addressed part of the store: blobs by digest, unpacked layers by diff_id.

    <root>/blobs/sha256/<hex>         manifests, configs, compressed layers, verified
    <root>/layers/<hex>/diff/         one unpacked layer (an overlayfs lower dir)
    <root>/layers/<hex>/layer.json    its diff_id, size, and the boot that wrote it
    <root>/tmp/                       work in progress; nothing here is ever read back
    <root>/locks/                     flock files

Anything visible under blobs/ or layers/ was verified first and renamed into place. Work in
progress is named after what it will become, so whoever next takes that item's lock knows the
leftovers are from a killed process and removes them.

Durability without an fsync per file: a layer carries the id of the boot that wrote it. In
that boot its data is safe even if our process dies (the page cache has it); after a crash it
may be torn, so it is trusted only once a syncfs has covered it and cleared the id
(ImageStore.add does that, before the image it belongs to is recorded).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vmctl_agent import atomic
from vmctl_agent.errors import VerificationError

_DIGEST = re.compile(r"sha256:([a-f0-9]{64})")


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: Path) -> None:
    """Delete `path` and everything below it, never following symlinks.

    shutil.rmtree recurses once per level, so a hostile layer 1,500 directories deep would
    crash it; this walk keeps one directory open at a time and climbs back with "..".
    """
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except RecursionError:
        pass
    fd = os.open(path, _DIR_FLAGS)
    names: list[str] = []
    while True:
        child = _clear_files(fd)
        if child is not None:
            fd = _reopen(fd, child)
            names.append(child)
        elif names:
            fd = _reopen(fd, "..")
            os.rmdir(names.pop(), dir_fd=fd)
        else:
            break
    os.close(fd)
    os.rmdir(path)


def tree_size(path: Path) -> int:
    """Disk used below `path` (allocated blocks, as du counts), symlinks not followed."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def _clear_files(fd: int) -> str | None:
    """Unlink the non-directories in `fd`; return one subdirectory's name, if any is left."""
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            os.unlink(entry.name, dir_fd=fd)
    return None


def _reopen(fd: int, name: str) -> int:
    new = os.open(name, _DIR_FLAGS, dir_fd=fd)
    os.close(fd)
    return new


def hex_of(digest: str) -> str:
    """The hex part of a sha256 digest, validated (it becomes a file name)."""
    match = _DIGEST.fullmatch(digest)
    if not match:
        raise VerificationError(f"unsupported or malformed digest {digest!r:.80}")
    return match[1]


# Overlay's lower dirs go in one mount(2) option page (4 KiB): by their 64-hex names only about
# 55 layers fit. A link per layer, `l/<first 12 hex>` beside `layers/`, lets about 220 fit (more
# than Docker's 125), as overlay2's `l/` links do.
SHORT_DIR = "l"
SHORT_LEN = 12


def short_lower(layer_dir: str) -> str:
    """`<root>/layers/<hex>/diff` as a lower dir relative to `<root>/layers`: `../l/<12 hex>`,
    its link made on first use (atomically); the long name if another layer has that prefix."""
    layers = os.path.dirname(os.path.dirname(layer_dir))
    hexname = os.path.basename(os.path.dirname(layer_dir))
    short = os.path.join(SHORT_DIR, hexname[:SHORT_LEN])
    link = os.path.join(os.path.dirname(layers), short)
    target = _short_target(hexname)
    try:
        if os.readlink(link) == target:
            return os.path.join("..", short)
        return os.path.relpath(layer_dir, layers)  # a prefix shared with another layer
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(link), exist_ok=True)
    temporary = f"{link}.{os.getpid()}.{threading.get_ident()}"
    os.symlink(target, temporary)
    os.replace(temporary, link)
    return short_lower(layer_dir)  # read back: a racing maker may have won with its own


def _short_target(hexname: str) -> str:
    return f"../layers/{hexname}/diff"


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)  # layers hold setuid binaries and device nodes: root only
        self.blobs = root / "blobs" / "sha256"
        self.layers = root / "layers"
        self.tmp = root / "tmp"
        self.locks = root / "locks"
        for path in (self.blobs, self.layers, self.tmp, self.locks):
            path.mkdir(parents=True, exist_ok=True)

    # -- blobs ------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / hex_of(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def put_blob(self, digest: str, data: bytes, *, durable: bool = True) -> None:
        """Store small `data` (a manifest or config) after checking it hashes to `digest`;
        not fsynced when told a syncfs covers it before anything names it."""
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise VerificationError(f"content {actual} does not match its digest {digest}")
        if not self.has_blob(digest):
            atomic.write_bytes(self.blob_path(digest), data, durable=durable)

    # -- layers -----------------------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> Path:
        """The overlayfs lower dir of layer `diff_id`."""
        return self.layers / hex_of(diff_id) / "diff"

    def remove_short_name(self, diff_id: str) -> None:
        """The short name's link, if it names this layer (it may name another: see short_lower)."""
        link = self.root / SHORT_DIR / hex_of(diff_id)[:SHORT_LEN]
        with contextlib.suppress(OSError):
            if os.readlink(link) == _short_target(hex_of(diff_id)):
                link.unlink()

    def has_layer(self, diff_id: str) -> bool:
        """Published, and either durable or written in this boot (so not torn by a crash)."""
        meta = self._layer_meta(diff_id)
        return meta is not None and meta.get("boot_id", "") in ("", atomic.boot_id())

    def _layer_meta(self, diff_id: str) -> dict | None:
        try:
            return json.loads((self.layers / hex_of(diff_id) / "layer.json").read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # torn by a crash: not a layer

    def mark_layer_durable(self, diff_id: str) -> None:
        meta = self._layer_meta(diff_id)
        if meta is not None and meta.get("boot_id"):
            meta["boot_id"] = ""
            atomic.write_json(self.layers / hex_of(diff_id) / "layer.json", meta)

    def layer_size(self, diff_id: str) -> int:
        meta = self._layer_meta(diff_id)
        if meta is None:
            raise FileNotFoundError(f"layer {diff_id} is not in the store")
        return int(meta["size"])

    @contextmanager
    def staging(self, key: str) -> Iterator[Path]:
        """A fresh work dir for item `key` (call under its lock); removed afterwards."""
        self.clear_leftovers(key)
        work = self.tmp / f"{hex_of(key)}.{os.urandom(6).hex()}"
        work.mkdir()
        try:
            yield work
        finally:
            remove_tree(work)

    def commit_layer(self, work: Path, diff_id: str, size: int, blob_digest: str) -> None:
        """Publish `work/diff` as layer `diff_id` and `work/blob` as `blob_digest`.

        Not yet durable, and not fsynced: it carries this boot's id, and is trusted only in
        this boot until ImageStore.add syncs the filesystem and clears the id.
        """
        meta = {"diff_id": diff_id, "size": size, "boot_id": atomic.boot_id()}
        (work / "layer.json").write_text(json.dumps(meta))
        if (work / "blob").exists() and not self.has_blob(blob_digest):
            os.replace(work / "blob", self.blob_path(blob_digest))
        (work / "blob").unlink(missing_ok=True)
        if self.has_layer(diff_id):
            return  # same content, published already (and maybe in use): keep that one
        final = self.layers / hex_of(diff_id)
        if final.exists():
            remove_tree(final)  # torn or from an earlier boot: replaced by what we verified
        os.rename(work, final)

    def remove_layer(self, diff_id: str) -> None:
        """Unpublish first (rename into tmp), then delete: never a half-deleted visible layer."""
        final = self.layers / hex_of(diff_id)
        if not final.exists():
            return
        doomed = self.tmp / f"{hex_of(diff_id)}.removing.{os.urandom(4).hex()}"
        os.rename(final, doomed)
        self.remove_short_name(diff_id)
        remove_tree(doomed)
        (self.locks / f"{hex_of(diff_id)}.lock").unlink(missing_ok=True)  # under the gc lock

    # -- locks and leftovers ----------------------------------------------------------------

    def lock(self, key: str, *, shared: bool = False):
        return atomic.locked(self.locks / f"{hex_of(key)}.lock", shared=shared)

    def gc_lock(self, *, shared: bool, wait: bool = True):
        """Pulls hold it shared; removal holds it exclusively, so it never frees a layer that a
        pull has fetched but not yet recorded."""
        return atomic.locked(self.locks / "gc.lock", shared=shared, wait=wait)

    def clear_tmp(self) -> None:
        """Remove all work in progress; only under the gc lock held exclusively."""
        for stale in self.tmp.iterdir():
            remove_tree(stale) if stale.is_dir() else stale.unlink()

    def clear_leftovers(self, key: str) -> None:
        for stale in self.tmp.glob(f"{hex_of(key)}.*"):
            remove_tree(stale) if stale.is_dir() else stale.unlink()
