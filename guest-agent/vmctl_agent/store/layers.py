"""Unpack one layer's tar stream into its own directory, ready to be an overlayfs lower dir.

Every path is walked from the layer's root one component at a time with O_NOFOLLOW and
`dir_fd`, so no entry can write outside the layer: not with `../`, not through a symlink made by
an earlier entry, not with a hard link to a file elsewhere. Absolute names are taken relative to
the layer root, as Docker does. Unlike Python's tarfile filters, ownership, modes, setuid bits,
xattrs and device nodes are kept: this is a root filesystem. Whiteouts become what overlayfs
expects: `.wh.NAME` a 0/0 character device, `.wh..wh..opq` the `trusted.overlay.opaque` xattr.
"""

from __future__ import annotations

import base64
import errno
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import BinaryIO

from vmctl_agent.errors import UnsafeLayer
from vmctl_agent.store.content import remove_tree

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_CHUNK = 1 << 20
_DIR_CACHE_MAX = 256
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def clean_name(name: str) -> str:
    """The entry's path relative to the layer root; `..` that would leave it is refused."""
    relative = posixpath.normpath(name.lstrip("/")) if name.strip("/") else "."
    if relative == ".." or relative.startswith("../"):
        raise UnsafeLayer(f"layer entry {name!r} points outside the layer directory")
    return relative


class _MissingDirectory(UnsafeLayer):
    """A hard link's target directory does not exist in this layer."""


class LayerExtractor:
    """Writes the entries of one tar stream below `root` (which must exist and be empty)."""

    def __init__(self, root: str, on_entry: Callable[[], None] | None = None) -> None:
        self._root_fd = os.open(root, _DIR_OPEN)
        self._dirs: dict[str, int] = {".": self._root_fd}
        self._dir_times: dict[str, tuple[int, int]] = {}
        self._seen: set[str] = {"."}  # paths this extraction made: nothing else exists here
        self._as_root = os.geteuid() == 0
        self._on_entry = on_entry or (lambda: None)

    def extract(self, stream: BinaryIO) -> None:
        """Unpack every entry of the tar `stream`, then set directory times.

        `stream` needs read, tell and a forward seek; a BlobStream also offers `copy_to`.
        """
        self._stream = stream
        try:
            for member in self._members(stream):
                self._entry(member)
                self._on_entry()
            self._apply_dir_times()
        finally:
            self.close()

    def _members(self, stream: BinaryIO):
        try:
            with tarfile.open(fileobj=stream, mode="r:") as tar:
                self._tar = tar
                yield from tar
        except tarfile.ReadError as e:
            if str(e) == "empty file" and stream.tell() == 0:
                return  # a zero-byte layer is a valid, empty layer
            raise UnsafeLayer(f"layer is not a valid tar archive: {e}") from e
        except tarfile.TarError as e:
            raise UnsafeLayer(f"layer is not a valid tar archive: {e}") from e

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()

    # -- one entry ------------------------------------------------------------------------

    def _entry(self, member: tarfile.TarInfo) -> None:
        path = clean_name(member.name)
        parent, base = posixpath.split(path)
        parent = parent or "."
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(path, parent, base)
        elif path == ".":
            self._metadata(self._root_fd, member)
        elif member.isdir():
            self._directory(path, parent, base, member)
        elif member.isreg():
            self._file(member, parent, base, path)
        elif member.issym():
            self._symlink(member, parent, base, path)
        elif member.islnk():
            self._hardlink(member, parent, base, path)
        elif member.ischr() or member.isblk() or member.isfifo():
            self._node(member, parent, base, path)
        self._seen.add(path)

    def _whiteout(self, path: str, parent: str, base: str) -> None:
        pfd = self._dir(parent, path)
        if base == OPAQUE_MARKER:
            os.setxattr(pfd, OPAQUE_XATTR, b"y")
        elif not base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            hidden = base[len(WHITEOUT_PREFIX) :]
            hidden_path = posixpath.normpath(posixpath.join(parent, hidden))
            self._clear(pfd, hidden, hidden_path)
            os.mknod(hidden, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
            self._seen.add(hidden_path)

    def _directory(self, path: str, parent: str, base: str, member: tarfile.TarInfo) -> None:
        pfd = self._dir(parent, path)
        if path not in self._dirs and not self._is_dir(pfd, base, path):
            self._clear(pfd, base, path)
            os.mkdir(base, 0o755, dir_fd=pfd)
        fd = self._dir(path, path)
        self._metadata(fd, member)
        self._dir_times[path] = (_ns(member), _ns(member))

    def _file(self, member, parent: str, base: str, path: str) -> None:
        pfd = self._dir(parent, path)
        self._clear(pfd, base, path)
        fd = os.open(base, _FILE_CREATE, 0o600, dir_fd=pfd)
        try:
            self._contents(member, fd)
            self._metadata(fd, member)
            os.utime(fd, ns=(_ns(member), _ns(member)))
        finally:
            os.close(fd)

    def _symlink(self, member, parent: str, base: str, path: str) -> None:
        pfd = self._dir(parent, path)
        self._clear(pfd, base, path)
        os.symlink(member.linkname, base, dir_fd=pfd)
        if self._as_root:
            os.chown(base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
        self._xattrs(f"/proc/self/fd/{pfd}/{base}", member, follow=False)
        times = (_ns(member), _ns(member))
        os.utime(base, ns=times, dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, member, parent: str, base: str, path: str) -> None:
        target = clean_name(member.linkname)
        tparent, tbase = posixpath.split(target)
        try:
            tfd = self._dir(tparent or ".", path, create=False)
            info = os.stat(tbase, dir_fd=tfd, follow_symlinks=False)
        except (_MissingDirectory, FileNotFoundError):
            info = None
        if info is None or stat.S_ISDIR(info.st_mode):
            raise UnsafeLayer(
                f"layer entry {member.name!r} links to {member.linkname!r}, "
                "which is not a file in this layer"
            )
        pfd = self._dir(parent, path)
        if target != path:
            self._clear(pfd, base, path)
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)

    def _node(self, member, parent: str, base: str, path: str) -> None:
        pfd = self._dir(parent, path)
        self._clear(pfd, base, path)
        kind = stat.S_IFIFO if member.isfifo() else stat.S_IFCHR if member.ischr() else stat.S_IFBLK
        device = os.makedev(member.devmajor, member.devminor)
        os.mknod(base, kind | 0o600, device, dir_fd=pfd)
        fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            proc = f"/proc/self/fd/{fd}"
            if self._as_root:
                os.chown(proc, member.uid, member.gid)
            os.chmod(proc, member.mode & 0o7777)
            self._xattrs(proc, member, follow=True)
        finally:
            os.close(fd)

    def _contents(self, member: tarfile.TarInfo, fd: int) -> None:
        """Copy the member's data from the stream; sparse members go through tarfile."""
        if member.sparse is not None:
            source = self._tar.extractfile(member)
            while chunk := source.read(_CHUNK):
                _write_all(fd, chunk)
            return
        self._stream.seek(member.offset_data)
        copy_to = getattr(self._stream, "copy_to", None)
        if copy_to is not None:
            copy_to(fd, member.size)
            return
        remaining = member.size
        while remaining:
            chunk = self._stream.read(min(remaining, _CHUNK))
            if not chunk:
                raise UnsafeLayer(f"layer ends in the middle of {member.name!r}")
            _write_all(fd, chunk)
            remaining -= len(chunk)

    # -- helpers --------------------------------------------------------------------------

    def _metadata(self, fd: int, member: tarfile.TarInfo) -> None:
        """Owner, then mode (a chown clears setuid bits), then xattrs."""
        if self._as_root:
            os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        self._xattrs(fd, member, follow=True)

    def _xattrs(self, target, member: tarfile.TarInfo, *, follow: bool) -> None:
        for name, value in _pax_xattrs(member):
            if name.startswith("trusted.overlay."):
                continue  # only our own whiteout handling may speak for overlayfs
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise

    def _is_dir(self, pfd: int, base: str, path: str) -> bool:
        if path not in self._seen:
            return False
        try:
            return stat.S_ISDIR(os.stat(base, dir_fd=pfd, follow_symlinks=False).st_mode)
        except FileNotFoundError:
            return False

    def _clear(self, pfd: int, base: str, path: str) -> None:
        """Remove whatever an earlier entry left at `path` (a later entry wins, as in tar)."""
        if path not in self._seen:
            return
        try:
            info = os.stat(base, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            self._forget(path)
            remove_tree(Path(f"/proc/self/fd/{pfd}/{base}"))
        else:
            os.unlink(base, dir_fd=pfd)

    def _forget(self, path: str) -> None:
        for key in [k for k in self._dirs if k == path or k.startswith(path + "/")]:
            os.close(self._dirs.pop(key))

    def _dir(self, path: str, entry: str, *, create: bool = True) -> int:
        """An fd for directory `path` in the layer, made (0755) if missing, never via a symlink.

        Walks down from the deepest directory already open, one component at a time.
        """
        if path in self._dirs:
            return self._dirs[path]
        if len(self._dirs) > _DIR_CACHE_MAX:
            self._trim(keep=path)
        parts = path.split("/")
        depth = len(parts)
        while depth and "/".join(parts[:depth]) not in self._dirs:
            depth -= 1
        fd = self._dirs["/".join(parts[:depth])] if depth else self._root_fd
        for i in range(depth, len(parts)):
            fd = self._open_dir(fd, parts[i], entry, create)
            self._dirs["/".join(parts[: i + 1])] = fd
            self._seen.add("/".join(parts[: i + 1]))
        return fd

    def _open_dir(self, pfd: int, base: str, entry: str, create: bool) -> int:
        try:
            return os.open(base, _DIR_OPEN, dir_fd=pfd)
        except FileNotFoundError:
            if not create:
                raise _MissingDirectory(
                    f"layer entry {entry!r} needs a missing directory"
                ) from None
            os.mkdir(base, 0o755, dir_fd=pfd)
            return os.open(base, _DIR_OPEN, dir_fd=pfd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeLayer(
                    f"layer entry {entry!r} goes through {base!r}, which is not a directory "
                    "(a symlink cannot be written through)"
                ) from None
            raise

    def _trim(self, keep: str) -> None:
        """Close cached directory fds not on the path to `keep` (bounded fd use)."""
        chain = {"."} | {keep[:i] for i in range(len(keep) + 1) if i == len(keep) or keep[i] == "/"}
        for key in [k for k in self._dirs if k not in chain]:
            os.close(self._dirs.pop(key))

    def _apply_dir_times(self) -> None:
        for path in sorted(self._dir_times, key=lambda p: -p.count("/")):
            fd = self._dirs.get(path)
            try:
                if fd is None:
                    os.utime(
                        path, ns=self._dir_times[path], dir_fd=self._root_fd, follow_symlinks=False
                    )
                else:
                    os.utime(fd, ns=self._dir_times[path])
            except FileNotFoundError:
                pass  # removed by a later entry


def _ns(member: tarfile.TarInfo) -> int:
    """The entry's time in nanoseconds; a PAX header may give it with a fraction (Python's
    tarfile writes one from a file's float st_mtime), read exactly from its text."""
    text = member.pax_headers.get("mtime")
    if text:
        try:
            return int(Decimal(text) * 10**9)
        except InvalidOperation:
            pass
    return int(member.mtime * 10**9)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _pax_xattrs(member: tarfile.TarInfo):
    """xattrs as GNU tar and Docker (`SCHILY.xattr.`) or libarchive (`LIBARCHIVE.`) write them."""
    for key, value in member.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            yield key[len("SCHILY.xattr.") :], value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            yield key[len("LIBARCHIVE.xattr.") :], base64.b64decode(value + "==")
