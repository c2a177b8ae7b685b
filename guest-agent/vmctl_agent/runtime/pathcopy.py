"""What `docker cp` reads from a container, worked out inside its root (rootview's helper):
a path's stat in dockerd's ContainerPathStat shape, and the path as a tar whose names start
with the path's own last element (dockerd's rebase). As dockerd's ResolvePath has it, the
directory part is resolved (symlinks followed inside the root), the last element is not: a
symlink is reported and archived as a symlink, and `docker cp -L` asks again for its target.

No user or group names are looked up: that would read the container's NSS configuration and
libraries as root, in our process.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
import time
from typing import BinaryIO

from vmctl_agent.runtime.rootview import RootViewError

# Go's os.FileMode type bits, which the stat's `mode` carries as dockerd sends it.
GO_DIR, GO_SYMLINK, GO_DEVICE, GO_PIPE = 1 << 31, 1 << 27, 1 << 26, 1 << 25
GO_SOCKET, GO_SETUID, GO_SETGID, GO_CHAR, GO_STICKY = 1 << 24, 1 << 23, 1 << 22, 1 << 21, 1 << 20
RUNTIME_MOUNTS = ("/proc", "/sys", "/dev")  # a running container's; not its files
CAPABILITY = "security.capability"
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def absolute(path: str) -> str:
    """The path taken from the root, cleaned, its trailing `/` or `/.` kept (dockerd's
    PreserveTrailingDotOrSeparator: they mean "the directory's contents")."""
    cleaned = posixpath.normpath("/" + path.lstrip("/"))
    if path.endswith("/.") or path == ".":
        return cleaned.rstrip("/") + "/."
    if path.endswith("/") and cleaned != "/":
        return cleaned + "/"
    return cleaned


def resolve(path: str) -> tuple[str, str]:
    """(resolved, absolute): the directory part resolved inside the root, the last element
    as given."""
    abs_path = absolute(path)
    directory, base = posixpath.split(abs_path)
    resolved = os.path.realpath(directory or "/")
    if not base:
        return resolved.rstrip("/") + "/", abs_path
    return posixpath.join(resolved, base), abs_path


def go_base(path: str) -> str:
    """Go's filepath.Base: the last element, trailing slashes ignored; "/" for the root."""
    stripped = path.rstrip("/")
    return posixpath.basename(stripped) if stripped else "/"


def go_mode(mode: int) -> int:
    """A stat mode as Go's os.FileMode."""
    bits = stat.S_IMODE(mode) & 0o777
    kind = stat.S_IFMT(mode)
    bits |= {stat.S_IFDIR: GO_DIR, stat.S_IFLNK: GO_SYMLINK, stat.S_IFIFO: GO_PIPE}.get(kind, 0)
    bits |= {stat.S_IFSOCK: GO_SOCKET, stat.S_IFBLK: GO_DEVICE}.get(kind, 0)
    bits |= GO_DEVICE | GO_CHAR if kind == stat.S_IFCHR else 0
    for flag, go in ((stat.S_ISUID, GO_SETUID), (stat.S_ISGID, GO_SETGID)):
        bits |= go if mode & flag else 0
    return bits | (GO_STICKY if mode & stat.S_ISVTX else 0)


def go_time(ns: int) -> str:
    """RFC 3339 with nanoseconds, trailing zeros dropped, in UTC (Go's time.Time in JSON)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return text + (f".{fraction:09d}".rstrip("0") if fraction else "") + "Z"


def lstat(resolved: str, asked: str) -> os.stat_result:
    try:
        return os.lstat(resolved)
    except FileNotFoundError:
        raise RootViewError(asked, "missing") from None
    except NotADirectoryError:
        raise RootViewError(f"{asked}: a part of the path is not a directory", "invalid") from None


def path_stat(path: str) -> dict:
    """dockerd's ContainerPathStat of `path` (a symlink's target fully resolved, absolute)."""
    resolved, abs_path = resolve(path)
    st = lstat(resolved, path)
    target = os.path.realpath(abs_path) if stat.S_ISLNK(st.st_mode) else ""
    return {
        "name": go_base(abs_path),
        "size": st.st_size,
        "mode": go_mode(st.st_mode),
        "mtime": go_time(st.st_mtime_ns),
        "linkTarget": target,
    }


def write_archive(path: str, out: BinaryIO, skip: tuple[str, ...] = ()) -> None:
    """`path` as a tar written to `out`; the contents of directories in `skip` left out (unless
    `path` is inside one: then they were asked for)."""
    resolved, abs_path = resolve(path)
    resolved = posixpath.normpath(resolved.rstrip("/") or "/")  # normpath keeps a "//"
    rebase = go_base(abs_path)
    skip = tuple(s for s in skip if not (resolved + "/").startswith(s + "/"))
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        writer = _Writer(tar, skip)
        writer.add(resolved, "/" if rebase == "/" else rebase)
        if stat.S_ISDIR(os.lstat(resolved).st_mode):
            writer.walk(resolved, "" if rebase == "/" else rebase)


class _Writer:
    """Entries in name order, a directory's own entries before its subdirectories' trees (the
    same members as Go's walk: a reader that wants a directory's top level, the GUI's Files
    tab, stops at the first deeper name instead of reading the whole tree); a file's later
    hard links stored as links to the first."""

    def __init__(self, tar: tarfile.TarFile, skip: tuple[str, ...]) -> None:
        self.tar, self.skip = tar, skip
        self.links: dict[tuple[int, int], str] = {}

    def walk(self, directory: str, prefix: str) -> None:
        if directory in self.skip:
            return
        subdirectories = []
        for name in sorted(os.listdir(directory)):
            path, entry = posixpath.join(directory, name), f"{prefix}/{name}"
            if self.add(path, entry):
                subdirectories.append((path, entry))
        for path, entry in subdirectories:
            self.walk(path, entry)

    def add(self, path: str, name: str) -> bool:
        """One entry; True if it is a directory to walk into."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False  # removed while we walked (a running container)
        info = self._info(path, name, st)
        if info is None:
            return False
        if info.isreg():
            with os.fdopen(os.open(path, _READ), "rb") as f:
                self.tar.addfile(info, f)
        else:
            self.tar.addfile(info)
        return info.isdir()

    def _info(self, path: str, name: str, st: os.stat_result) -> tarfile.TarInfo | None:
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = stat.S_IMODE(st.st_mode), st.st_mtime_ns // 1_000_000_000
        info.uid, info.gid = st.st_uid, st.st_gid
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFREG:
            self._file(info, st)
            self._capability(path, info)
        elif kind == stat.S_IFDIR:
            info.type = tarfile.DIRTYPE
        elif kind == stat.S_IFLNK:
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            info.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif kind == stat.S_IFIFO:
            info.type = tarfile.FIFOTYPE
        else:
            return None  # a socket: tar has no type for it (dockerd skips them too)
        return info

    @staticmethod
    def _capability(path: str, info: tarfile.TarInfo) -> None:
        """A file's capabilities travel with it, as dockerd's tar carries them (the one
        xattr it archives)."""
        try:
            value = os.getxattr(path, CAPABILITY, follow_symlinks=False)
        except OSError:
            return  # none (ENODATA), or a filesystem without xattrs
        info.pax_headers = {f"SCHILY.xattr.{CAPABILITY}": value.decode("utf-8", "surrogateescape")}

    def _file(self, info: tarfile.TarInfo, st: os.stat_result) -> None:
        first = self.links.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
        if first is not None:
            info.type, info.linkname = tarfile.LNKTYPE, first
            return
        if st.st_nlink > 1:
            self.links[(st.st_dev, st.st_ino)] = info.name
        info.type, info.size = tarfile.REGTYPE, st.st_size
