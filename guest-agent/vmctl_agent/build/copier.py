"""COPY and ADD into a mounted image root, with Docker's rules: sources globbed in the
context (or in another stage's or image's root for `--from`), symlinks resolved inside their
root; a directory's contents copied rather than the directory; several sources need a
destination directory ending in `/`; missing parents made 0755; everything owned by root or
by `--chown` (a user alone means the same number as group), modes kept or set by `--chmod`,
times kept. ADD also unpacks a local tar archive (plain, gzip, bzip2, xz), keeping its owners.
"""

from __future__ import annotations

import bz2
import fnmatch
import gzip
import lzma
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path

from vmctl_agent.build import trees
from vmctl_agent.build.overlay import scoped
from vmctl_agent.errors import AgentError
from vmctl_agent.store.content import remove_tree
from vmctl_agent.store.layers import LayerExtractor

_MAGIC = ((b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))


class CopyError(AgentError):
    """A COPY or ADD that cannot be done (the message is dockerd's)."""


@dataclass(frozen=True)
class Source:
    name: str  # as the Dockerfile wrote it, after globbing
    path: str  # the path in its tree, inside its root
    tree: trees.Tree = trees.DISK


@dataclass(frozen=True)
class Target:
    dest: str  # absolute in the image
    uid: int
    gid: int
    mode: int | None  # --chmod
    unpack: bool  # ADD: unpack local archives
    keep_owner: bool = False


def find_sources(
    root: str, patterns: list[str], verb: str, tree: trees.Tree = trees.DISK
) -> list[Source]:
    """Every source in `tree` under `root`, globbed; a pattern that matches nothing is an
    error."""
    found: list[Source] = []
    for pattern in patterns:
        clean = posixpath.normpath("/" + pattern).lstrip("/")
        if posixpath.normpath(pattern).split("/")[0] == "..":
            raise CopyError(
                f"{verb} failed: forbidden path outside the build context: {pattern} ()"
            )
        matches = _glob(root, clean, tree) if _magic(clean) else [clean]
        real = [(m, scoped(root, m, links=tree.link)) for m in matches]
        real = [(m, p) for m, p in real if trees.lexists(tree, p)]
        if not real:
            raise CopyError(
                f"{verb} failed: file not found in build context or excluded by "
                f".dockerignore: stat {pattern}: file does not exist"
            )
        found += [Source(m, p, tree) for m, p in real]
    return found


def _magic(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _glob(root: str, pattern: str, tree: trees.Tree) -> list[str]:
    found = [""]
    for part in pattern.split("/") if pattern != "." else []:
        step = []
        for base in found:
            directory = scoped(root, base, links=tree.link)
            if not _magic(part):
                step.append(posixpath.join(base, part))
            elif trees.kind(tree, directory) == stat.S_IFDIR:
                names = sorted(n for n in tree.listdir(directory) if fnmatch.fnmatchcase(n, part))
                step += [posixpath.join(base, n) for n in names]
        found = step
    return found


def content_hash(sources: list[Source]) -> str:
    """The sources' label for the cache and the history (trees.content_hash)."""
    return trees.content_hash([(s.name, s.tree, s.path) for s in sources])


# -- writing -----------------------------------------------------------------------------------


def copy(root: str, sources: list[Source], target: Target, scratch: Path) -> None:
    """Write `sources` into the mounted image `root` at `target.dest`."""
    many = len(sources) > 1
    if many and not target.dest.endswith("/"):
        raise CopyError(
            "When using COPY with more than one source file, the destination must be a "
            "directory and end with a /"
        )
    for source in sources:
        _copy_one(root, source, target, scratch, many)


def _copy_one(root: str, source: Source, target: Target, scratch: Path, many: bool) -> None:
    tree = source.tree
    if target.unpack and _archive_kind(tree, source.path):
        unpacked = scratch / f"unpacked-{os.urandom(4).hex()}"
        _unpack(tree, source.path, unpacked)
        keep = Target(target.dest, target.uid, target.gid, target.mode, False, keep_owner=True)
        made = make_dir(root, target.dest, target)
        _copy_tree(trees.DISK, str(unpacked), made, keep, top=False)
        remove_tree(unpacked)
        return
    if trees.kind(tree, source.path) == stat.S_IFDIR:
        fresh = not os.path.lexists(scoped(root, target.dest))
        _copy_tree(tree, source.path, make_dir(root, target.dest, target), target, top=fresh)
        return
    if many or target.dest.endswith("/") or os.path.isdir(scoped(root, target.dest)):
        dest = os.path.join(make_dir(root, target.dest, target), posixpath.basename(source.name))
    else:  # the last name is replaced, never followed
        parent = make_dir(root, posixpath.dirname(target.dest), target)
        dest = os.path.join(parent, posixpath.basename(target.dest))
    _put(tree, source.path, dest, tree.lstat(source.path), target)


def make_dir(root: str, path: str, target: Target) -> str:
    """`path` as a directory in the image (made with its parents, 0755, owned as --chown
    says, where missing); its real path."""
    real = scoped(root, path)
    missing = []
    probe = real
    while probe != root and not os.path.lexists(probe):
        missing.append(probe)
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise CopyError(f"cannot copy to {path}: {os.path.relpath(probe, root)} is not a directory")
    for directory in reversed(missing):
        os.mkdir(directory, 0o755)
        os.chown(directory, target.uid, target.gid)
    return real


def _copy_tree(tree: trees.Tree, source: str, dest: str, target: Target, *, top: bool) -> None:
    """The contents of directory `source` into the real directory `dest`; a `dest` made for
    this copy (`top`) takes the source directory's mode and times, one that was there
    already stays as it was, as dockerd has it."""
    for rel, path, info in trees.walk(tree, source):
        here = dest if rel == "." else os.path.join(dest, rel)
        if rel == ".":
            if top:
                _metadata(here, info, target)
            continue
        _put(tree, path, here, info, target)


def _put(tree: trees.Tree, path: str, here: str, info, target: Target) -> None:
    """One entry at `here` (whose parent is a real directory), replacing what was there."""
    existing = _lstat(here)
    if stat.S_ISDIR(info.st_mode):
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            _remove(here, existing)
            os.mkdir(here, 0o700)
    else:
        _remove(here, existing)
        _create(tree, path, here, info)
    _metadata(here, info, target)


def _create(tree: trees.Tree, path: str, here: str, info) -> None:
    if stat.S_ISLNK(info.st_mode):
        os.symlink(tree.link(path) or "", here)
    elif stat.S_ISREG(info.st_mode):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(here, flags, 0o600)
        try:
            tree.copy_into(path, fd)
        finally:
            os.close(fd)
    else:
        os.mknod(here, info.st_mode, info.st_rdev)


def _metadata(here: str, info, target: Target) -> None:
    uid, gid = (info.st_uid, info.st_gid) if target.keep_owner else (target.uid, target.gid)
    os.chown(here, uid, gid, follow_symlinks=False)
    if not stat.S_ISLNK(info.st_mode):
        mode = target.mode if target.mode is not None else stat.S_IMODE(info.st_mode)
        os.chmod(here, mode)
    os.utime(here, ns=(info.st_atime_ns, info.st_mtime_ns), follow_symlinks=False)


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _remove(path: str, existing: os.stat_result | None) -> None:
    if existing is None:
        return
    if stat.S_ISDIR(existing.st_mode):
        remove_tree(Path(path))
    else:
        os.unlink(path)


# -- ADD's archives ----------------------------------------------------------------------------


def _archive_kind(tree: trees.Tree, path: str) -> str | None:
    """ "tar", "gz", "bz2" or "xz" for a file ADD unpacks; None for any other file."""
    if trees.kind(tree, path) != stat.S_IFREG:
        return None
    with tree.open(path) as f:
        head = f.read(512)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "tar" if len(head) == 512 and head[257:262] == b"ustar" else None


def _unpack(tree: trees.Tree, path: str, into: Path) -> None:
    openers = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}
    into.mkdir()
    kind = _archive_kind(tree, path) or "tar"
    with tree.open(path) as raw:
        if kind not in openers:
            LayerExtractor(str(into)).extract(raw)
            return
        with openers[kind](raw, "rb") as stream:
            LayerExtractor(str(into)).extract(stream)
