"""What `docker cp` writes into a container, worked out inside its root (rootview's helper),
by the rules of dockerd's untar: the extraction point must be a directory (a symlink to one
will do), an existing directory merges with an archived one and anything else is replaced,
owners are the archive's (or, with copyUIDGID, the container user's), modes, times, device
nodes and security xattrs are kept; with noOverwriteDirNonDir a directory and a non-directory
never replace each other.

Two passes over the spooled (plain, seekable) tar: the first refuses, before anything is
written, what dockerd refuses only when it meets it (an unreadable archive, an entry or a link
leading out of the extraction directory, a swap that noOverwriteDirNonDir forbids); the
second writes. Being inside the root, no path here can name a host file: the root's own
symlinks and `..` end at the container's `/`.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass

from vmctl_agent.runtime import pathcopy
from vmctl_agent.runtime.rootview import RootViewError

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NODES = {
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}
_XATTR = "SCHILY.xattr."


@dataclass(frozen=True)
class ExtractOptions:
    no_overwrite_dir_non_dir: bool = False
    owner: tuple[int, int] | None = None  # copyUIDGID with a container user: everything theirs


def destination(path: str) -> str:
    """The extraction directory inside the root, its last element followed too (dockerd lets
    an archive go to a symlink to a directory)."""
    resolved = os.path.realpath(pathcopy.absolute(path))
    if not stat.S_ISDIR(pathcopy.lstat(resolved, path).st_mode):
        raise RootViewError("extraction point is not a directory", "invalid")
    if os.statvfs(resolved).f_flag & os.ST_RDONLY:
        raise RootViewError("mounted volume is marked read-only", "invalid")
    return resolved


def extract(path: str, tar_fd: int, options: ExtractOptions) -> dict:
    """Check the whole archive against `path`, then unpack it there."""
    dest = destination(path)
    for member in _members(tar_fd):
        _check(member, dest, options)
    _Extractor(dest, options).run(tar_fd)
    return {}


def _members(tar_fd: int):
    os.lseek(tar_fd, 0, os.SEEK_SET)
    try:
        with (
            os.fdopen(tar_fd, "rb", closefd=False) as stream,
            tarfile.open(fileobj=stream, mode="r:") as tar,
        ):
            yield from tar
    except tarfile.TarError as e:
        raise RootViewError(f"the archive is not a readable tar: {e}", "invalid") from None


def target_of(member: tarfile.TarInfo, dest: str) -> str:
    """Where the entry goes: below `dest`, or refused as dockerd refuses it."""
    name = posixpath.normpath(member.name).lstrip("/")  # absolute names are taken from dest
    target = posixpath.normpath(posixpath.join(dest, name))
    relative = posixpath.relpath(target, dest)
    if relative == ".." or relative.startswith("../"):
        raise _invalid(f"{_q(member.name)} is outside of {_q(dest)}")
    return target


def _check(member: tarfile.TarInfo, dest: str, options: ExtractOptions) -> None:
    target = target_of(member, dest)
    if member.issym():
        _inside(f"{posixpath.dirname(target)}/{member.linkname}", dest, "symlink", target, member)
    elif member.islnk():
        _inside(f"{dest}/{member.linkname}", dest, "hardlink", target, member)
    if options.no_overwrite_dir_non_dir and target != dest:
        _swap_allowed(target, member, dest)


def _inside(link: str, dest: str, kind: str, target: str, member: tarfile.TarInfo) -> None:
    if not posixpath.normpath(link).startswith(dest):
        raise _invalid(f"invalid {kind} {_q(target)} -> {_q(member.linkname)}")


def _swap_allowed(target: str, member: tarfile.TarInfo, dest: str) -> None:
    """noOverwriteDirNonDir: a directory and a non-directory never replace each other."""
    try:
        existing = os.lstat(target)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(existing.st_mode) and not member.isdir():
        raise _invalid(f"cannot overwrite directory {_q(target)} with non-directory {_q(dest)}")
    if not stat.S_ISDIR(existing.st_mode) and member.isdir():
        raise _invalid(f"cannot overwrite non-directory {_q(target)} with directory {_q(dest)}")


class _Extractor:
    """The second pass: each entry written, then the directories' times (which writing
    into them changed)."""

    def __init__(self, dest: str, options: ExtractOptions) -> None:
        self.dest, self.options = dest, options
        self.dir_times: list[tuple[str, int]] = []

    def run(self, tar_fd: int) -> None:
        os.lseek(tar_fd, 0, os.SEEK_SET)
        with (
            os.fdopen(tar_fd, "rb", closefd=False) as stream,
            tarfile.open(fileobj=stream, mode="r:") as tar,
        ):
            for member in tar:
                self.entry(tar, member)
        for path, mtime in self.dir_times:
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)

    def entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        _check(member, self.dest, self.options)
        target = target_of(member, self.dest)
        if target == self.dest:
            return  # ".": the extraction point itself stays as it is
        os.makedirs(posixpath.dirname(target), mode=0o755, exist_ok=True)
        self._clear(target, member)
        self._create(tar, member, target)
        self._metadata(member, target)

    def _clear(self, target: str, member: tarfile.TarInfo) -> None:
        """Whatever is there goes, unless both are directories (then they merge)."""
        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(existing.st_mode):
            if not member.isdir():
                shutil.rmtree(target)
        else:
            os.unlink(target)

    def _create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
        if member.isdir():
            if not os.path.lexists(target):
                os.mkdir(target, 0o755)
        elif member.isreg():
            _write_file(tar, member, target)
        elif member.issym():
            os.symlink(member.linkname, target)
        elif member.islnk():
            source = posixpath.normpath(f"{self.dest}/{member.linkname}")
            os.link(source, target, follow_symlinks=False)
        elif member.type in _NODES:
            device = os.makedev(member.devmajor, member.devminor)
            os.mknod(target, _NODES[member.type] | 0o600, device)
        else:
            raise _invalid(f"unhandled tar header type {member.type!r} for {_q(member.name)}")

    def _metadata(self, member: tarfile.TarInfo, target: str) -> None:
        """Owners first (a chown clears setuid bits), then xattrs, mode and time."""
        if member.islnk():
            return  # the file it links to has them
        uid, gid = self.options.owner or (member.uid, member.gid)
        os.lchown(target, uid, gid)
        for key, value in member.pax_headers.items():
            if key.startswith(_XATTR):
                raw = value.encode("utf-8", "surrogateescape")
                os.setxattr(target, key[len(_XATTR) :], raw, follow_symlinks=False)
        if not member.issym():
            os.chmod(target, member.mode)
        mtime = int(member.mtime * 1_000_000_000)
        if member.isdir():
            self.dir_times.append((target, mtime))
        else:
            os.utime(target, ns=(mtime, mtime), follow_symlinks=False)


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    source = tar.extractfile(member)
    with os.fdopen(os.open(target, _CREATE, 0o600), "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)


def _q(text: str) -> str:
    """Go's %q, near enough: double quotes, escapes."""
    return json.dumps(text)


def _invalid(message: str) -> RootViewError:
    return RootViewError(message, "invalid")
