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
import hashlib
import lzma
import os
import posixpath
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

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
    path: str  # the real path, inside its root


@dataclass(frozen=True)
class Target:
    dest: str  # absolute in the image
    uid: int
    gid: int
    mode: int | None  # --chmod
    unpack: bool  # ADD: unpack local archives
    keep_owner: bool = False


def find_sources(root: str, patterns: list[str], verb: str) -> list[Source]:
    """Every source, globbed; a pattern that matches nothing is an error."""
    found: list[Source] = []
    for pattern in patterns:
        clean = posixpath.normpath("/" + pattern).lstrip("/")
        if posixpath.normpath(pattern).split("/")[0] == "..":
            raise CopyError(
                f"{verb} failed: forbidden path outside the build context: {pattern} ()"
            )
        matches = _glob(root, clean) if _magic(clean) else [clean]
        real = [(m, scoped(root, m)) for m in matches]
        real = [(m, p) for m, p in real if os.path.lexists(p)]
        if not real:
            raise CopyError(
                f"{verb} failed: file not found in build context or excluded by "
                f".dockerignore: stat {pattern}: file does not exist"
            )
        found += [Source(m, p) for m, p in real]
    return found


def _magic(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _glob(root: str, pattern: str) -> list[str]:
    found = [""]
    for part in pattern.split("/") if pattern != "." else []:
        step = []
        for base in found:
            directory = scoped(root, base)
            if not _magic(part):
                step.append(posixpath.join(base, part))
            elif os.path.isdir(directory):
                names = sorted(n for n in os.listdir(directory) if fnmatch.fnmatchcase(n, part))
                step += [posixpath.join(base, n) for n in names]
        found = step
    return found


def content_hash(sources: list[Source]) -> str:
    """dockerd's `file:`, `dir:` or `multi:` label, over names, modes, link targets and
    contents (not times or owners, which its cache ignores too)."""
    digest = hashlib.sha256()
    for source in sources:
        for rel, path, info in _tree(source.path):
            digest.update(f"{source.name}/{rel}\0{stat.S_IMODE(info.st_mode)}\0".encode())
            if stat.S_ISLNK(info.st_mode):
                digest.update(os.readlink(path).encode())
            elif stat.S_ISREG(info.st_mode):
                _hash_file(digest, path)
    kind = "multi" if len(sources) > 1 else "dir" if os.path.isdir(sources[0].path) else "file"
    return f"{kind}:{digest.hexdigest()}"


def _hash_file(digest, path: str) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)


def _tree(top: str):
    """(relative path, path, lstat) of `top` and, for a directory, all under it, sorted."""
    info = os.lstat(top)
    yield ".", top, info
    if stat.S_ISDIR(info.st_mode):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, top), path, os.lstat(path)


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
    if target.unpack and _archive_kind(source.path):
        unpacked = scratch / f"unpacked-{os.urandom(4).hex()}"
        _unpack(source.path, unpacked)
        keep = Target(target.dest, target.uid, target.gid, target.mode, False, keep_owner=True)
        _copy_tree(str(unpacked), make_dir(root, target.dest, target), keep, top=False)
        remove_tree(unpacked)
        return
    if os.path.isdir(source.path):
        fresh = not os.path.lexists(scoped(root, target.dest))
        _copy_tree(source.path, make_dir(root, target.dest, target), target, top=fresh)
        return
    if many or target.dest.endswith("/") or os.path.isdir(scoped(root, target.dest)):
        dest = os.path.join(make_dir(root, target.dest, target), posixpath.basename(source.name))
    else:  # the last name is replaced, never followed
        parent = make_dir(root, posixpath.dirname(target.dest), target)
        dest = os.path.join(parent, posixpath.basename(target.dest))
    _put(source.path, dest, os.stat(source.path), target)


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


def _copy_tree(source: str, dest: str, target: Target, *, top: bool) -> None:
    """The contents of directory `source` into the real directory `dest`; a `dest` made for
    this copy (`top`) takes the source directory's mode and times, one that was there
    already stays as it was, as dockerd has it."""
    for rel, path, info in _tree(source):
        here = dest if rel == "." else os.path.join(dest, rel)
        if rel == ".":
            if top:
                _metadata(here, info, target)
            continue
        _put(path, here, info, target)


def _put(path: str, here: str, info: os.stat_result, target: Target) -> None:
    """One entry at `here` (whose parent is a real directory), replacing what was there."""
    existing = _lstat(here)
    if stat.S_ISDIR(info.st_mode):
        if existing is None or not stat.S_ISDIR(existing.st_mode):
            _remove(here, existing)
            os.mkdir(here, 0o700)
    else:
        _remove(here, existing)
        _create(path, here, info)
    _metadata(here, info, target)


def _create(path: str, here: str, info: os.stat_result) -> None:
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(path), here)
    elif stat.S_ISREG(info.st_mode):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with open(path, "rb") as src, os.fdopen(os.open(here, flags, 0o600), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    else:
        os.mknod(here, info.st_mode, info.st_rdev)


def _metadata(here: str, info: os.stat_result, target: Target) -> None:
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


def _archive_kind(path: str) -> str | None:
    """ "tar", "gz", "bz2" or "xz" for a file ADD unpacks; None for any other file."""
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(512)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "tar" if len(head) == 512 and head[257:262] == b"ustar" else None


def _unpack(path: str, into: Path) -> None:
    openers = {"gz": gzip.open, "bz2": bz2.open, "xz": lzma.open, "tar": open}
    into.mkdir()
    with openers[_archive_kind(path) or "tar"](path, "rb") as stream:
        LayerExtractor(str(into)).extract(stream)
