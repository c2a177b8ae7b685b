"""The reverse SFTP share's server: SFTP version 3, as the guest's `sshfs -o slave` speaks it
(with OpenSSH's extensions it asks for), answering from one host folder as the user running
vmctl.

It is one loop in the thread that reads the stream: the bytes of each request, one system
call, the answer, written with the others of the same read. paramiko's SFTPServer, which
this replaced, took 0.36 ms of Python a request, handed between two threads, while an
emulated guest waited for every answer (bench/README.md).

Ownership follows: every file the VM makes here is made by this process, so it belongs to
the user on the host, whoever (root in a container) asked for it; and the user's own files
are as writable from the VM as they are for the user. A read-only share refuses every write
here as well as being mounted `ro` in the guest.

Paths arrive as the guest names them, which is the host's path (shared at the same path);
anything outside the shared folder is refused, and so is a path that a symbolic link leads out
of it. The guest's kernel resolves links in the guest (as with virtiofs and 9p), so sshfs never
needs this side to follow one out; but a link the VM made, or the user has, would otherwise
take an open, a stat or a write wherever it points, as the user.

What the VM changes here is told to `own` (edits.OwnWrites), so that the host agent does not
carry those changes back to the guest as host edits.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from vmctl.edits import OwnWrites

# packet types (draft-ietf-secsh-filexfer-02)
INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME, READLINK, SYMLINK = range(11, 21)
STATUS, HANDLE, DATA, NAME, ATTRS = 101, 102, 103, 104, 105
EXTENDED, EXTENDED_REPLY = 200, 201
# status codes
OK, EOF, NO_SUCH_FILE, PERMISSION_DENIED, FAILURE, BAD_MESSAGE = 0, 1, 2, 3, 4, 5
OP_UNSUPPORTED = 8
# attribute flags
ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME = 1, 2, 4, 8
ATTR_EXTENDED = 0x80000000
# open flags
F_READ, F_WRITE, F_APPEND, F_CREAT, F_TRUNC, F_EXCL = 1, 2, 4, 8, 0x10, 0x20

MAX_PACKET = 1 << 20  # bytes; sshfs sends at most 64 KiB of data a request
MAX_READ = 256 * 1024  # bytes answered to one read
NAMES = 100  # entries an answer to READDIR carries
ST_RDONLY, ST_NOSUID = 1, 2


class BadMessage(Exception):
    """A request this server cannot parse, answered BAD_MESSAGE; raised out of `serve` for a
    packet it cannot even frame (too big), which ends the stream."""


@dataclass
class Attrs:
    """What SFTP v3 carries of a file; None where the request leaves it out."""

    size: int | None = None
    mode: int | None = None
    atime: int | None = None
    mtime: int | None = None


class Folder:
    """One host folder, as the guest may use it. Each method acts on the real file system and
    raises OSError (PermissionError for what the share refuses)."""

    def __init__(self, root: str, read_only: bool, own: OwnWrites | None = None) -> None:
        self.root = os.path.normpath(root)
        self.real_root = os.path.realpath(self.root)
        self.read_only = read_only
        self.own = own or OwnWrites()

    def path(self, path: str, writing: bool = False, follow: bool = True) -> str:
        """The host path that an operation on the guest's `path` acts on: its links resolved
        (the last one too when the operation `follow`s it, as open and stat do), and still in
        the folder."""
        wanted = os.path.normpath(path)
        if writing:
            self.writable()
        if not _within(wanted, self.root):
            raise PermissionError(f"{wanted} is not in the shared folder {self.root}")
        if wanted == self.root:
            real = self.real_root
        elif follow:
            real = os.path.realpath(wanted)
        else:
            parent, name = os.path.split(wanted)
            real = os.path.join(os.path.realpath(parent), name)
        if not _within(real, self.real_root):
            raise PermissionError(f"{wanted} leads out of the shared folder {self.root}")
        return real

    def writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"{self.root} is shared read-only")

    @contextlib.contextmanager
    def changing(self, *paths: str, follow: bool = True) -> Iterator[list[str]]:
        """The real paths of a change the VM makes (read-only shares refuse it); `own` hears
        of it under the names the guest used, which are those the host's watcher sees."""
        real = [self.path(path, True, follow) for path in paths]
        with self.own.changing(*map(os.path.normpath, paths)):
            yield real

    def canonical(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.root, path) if path else self.root)

    def open(self, path: str, flags: int, mode: int | None) -> _File:
        writing = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC))
        mode = 0o666 if mode is None else mode & 0o7777
        # a FIFO of the user's must not hold this one thread in open(), nor a terminal
        # become this process's (reads and writes are pread and pwrite: a FIFO refuses them)
        flags |= getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
        flags |= getattr(os, "O_NOCTTY", 0)
        if not writing:
            return _File(os.open(self.path(path), flags, mode), path, None)
        with self.changing(path) as (real,):
            return _File(os.open(real, flags, mode), os.path.normpath(path), self.own)

    def listing(self, path: str) -> tuple[str, list[str]]:
        """The folder's real path, and its names."""
        real = self.path(path)
        return real, os.listdir(real)

    def stat(self, path: str, follow: bool = True) -> os.stat_result:
        return os.stat(self.path(path, follow=follow), follow_symlinks=follow)

    def set(self, path: str, attrs: Attrs) -> None:
        _set(self.path(path, True), attrs)

    def remove(self, path: str) -> None:
        with self.changing(path, follow=False) as (real,):
            os.remove(real)

    def rename(self, old: str, new: str, replace: bool) -> None:
        """SFTP's own rename never replaces an existing file (sshfs asks for posix-rename for
        that)."""
        with self.changing(old, new, follow=False) as (real_old, real_new):
            if not replace and os.path.lexists(real_new):
                raise FileExistsError(f"{new} exists")
            os.replace(real_old, real_new)

    def link(self, old: str, new: str) -> None:
        """A hard link: link(2) makes it to a symbolic link itself, never to its target."""
        with self.changing(old, new, follow=False) as (real_old, real_new):
            if os.link in os.supports_follow_symlinks:
                os.link(real_old, real_new, follow_symlinks=False)
            elif os.path.islink(real_old):  # Windows links a link's target, maybe out there
                raise PermissionError(f"{old} is a symbolic link: no hard link to it here")
            else:
                os.link(real_old, real_new)

    def mkdir(self, path: str, mode: int | None) -> None:
        with self.changing(path, follow=False) as (real,):
            os.mkdir(real, 0o777 if mode is None else mode & 0o7777)

    def rmdir(self, path: str) -> None:
        with self.changing(path, follow=False) as (real,):
            os.rmdir(real)

    def readlink(self, path: str) -> str:
        return os.readlink(self.path(path, follow=False))

    def symlink(self, target: str, path: str) -> None:
        """The link is made as asked, pointing anywhere: the guest resolves it in the guest."""
        with self.changing(path, follow=False) as (real,):
            os.symlink(target, real)

    def statvfs(self, path: str) -> os.statvfs_result:
        return os.statvfs(self.path(path))


class _File:
    """An open file: `own` (the VM writes with it) is told of its close, as `named`."""

    def __init__(self, fd: int, named: str, own: OwnWrites | None) -> None:
        self.fd, self.named, self.own = fd, named, own

    def read(self, offset: int, size: int) -> bytes:
        if hasattr(os, "pread"):
            return os.pread(self.fd, size, offset)
        os.lseek(self.fd, offset, os.SEEK_SET)  # Windows; requests come one at a time
        return os.read(self.fd, size)

    def write(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if hasattr(os, "pwrite"):
                done = os.pwrite(self.fd, view, offset)
            else:
                os.lseek(self.fd, offset, os.SEEK_SET)
                done = os.write(self.fd, view)
            view, offset = view[done:], offset + done

    def set(self, attrs: Attrs, path_now: Callable[[], str]) -> None:
        """On the open file itself where the OS can (its path may be a link by now)."""
        _set(self.fd if os.chmod in os.supports_fd else path_now(), attrs)

    def close(self) -> None:
        if self.own is None:
            os.close(self.fd)
            return
        with self.own.changing(self.named):  # its close is what the watcher hears
            os.close(self.fd)


class _Listing:
    def __init__(self, folder: str, names: list[str]) -> None:
        self.folder, self.names = folder, iter(names)


class Server:
    """Answers one guest's sshfs from `folder`."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder
        self.handles: dict[bytes, _File | _Listing] = {}
        self._ids = itertools.count()
        self.extensions = {
            b"posix-rename@openssh.com": b"1",
            b"hardlink@openssh.com": b"1",
            b"fsync@openssh.com": b"1",
            **({b"statvfs@openssh.com": b"2"} if hasattr(os, "statvfs") else {}),
        }
        self._do: dict[int, Callable[[_Reader, int], bytes]] = {
            OPEN: self._open, CLOSE: self._close, READ: self._read, WRITE: self._write,
            LSTAT: self._lstat, FSTAT: self._fstat, SETSTAT: self._setstat,
            FSETSTAT: self._fsetstat, OPENDIR: self._opendir, READDIR: self._readdir,
            REMOVE: self._remove, MKDIR: self._mkdir, RMDIR: self._rmdir,
            REALPATH: self._realpath, STAT: self._stat, RENAME: self._rename,
            READLINK: self._readlink, SYMLINK: self._symlink, EXTENDED: self._extended,
        }  # fmt: skip

    def serve(self, recv: Callable[[int], bytes], send: Callable[[bytes], object]) -> None:
        """Answer requests read by `recv` until it reads nothing, the answers to each read's
        requests sent together; then close what the guest left open."""
        buffer = bytearray()
        try:
            while chunk := recv(256 * 1024):
                buffer += chunk
                answers = []
                while len(buffer) >= 4:
                    size = int.from_bytes(buffer[:4], "big")
                    if size > MAX_PACKET or size == 0:
                        raise BadMessage(f"a packet of {size} bytes")
                    if len(buffer) < 4 + size:
                        break
                    answers.append(self.answer(bytes(buffer[4 : 4 + size])))
                    del buffer[: 4 + size]
                if answers:
                    send(b"".join(answers))
        finally:
            self.close_all()

    def answer(self, packet: bytes) -> bytes:
        """The framed answer to one request (its length's 4 bytes removed)."""
        kind, body = packet[0], _Reader(packet[1:])
        if kind == INIT:
            pairs = b"".join(_string(k) + _string(v) for k, v in self.extensions.items())
            return _packet(VERSION, _u32(3) + pairs)
        try:
            request = body.u32()
        except BadMessage:
            return b""  # no id to answer
        do = self._do.get(kind)
        if do is None:
            return _status(request, OP_UNSUPPORTED, f"request type {kind}")
        try:
            return do(body, request)
        except BadMessage as e:
            return _status(request, BAD_MESSAGE, str(e))
        except OSError as e:
            return _status(request, *_code(e))
        except (ValueError, OverflowError) as e:  # a size or time the host cannot take
            return _status(request, FAILURE, str(e))

    def close_all(self) -> None:
        for handle in self.handles.values():
            if isinstance(handle, _File):
                with contextlib.suppress(OSError):
                    handle.close()
        self.handles.clear()

    def _handle(self, kind: type, body: _Reader):
        found = self.handles.get(body.string())
        if not isinstance(found, kind):
            raise BadMessage("no such handle")
        return found

    def _new_handle(self, request: int, opened: _File | _Listing) -> bytes:
        handle = str(next(self._ids)).encode()
        self.handles[handle] = opened
        return _packet(HANDLE, _u32(request) + _string(handle))

    def _open(self, body: _Reader, request: int) -> bytes:
        path, pflags, attrs = body.path(), body.u32(), body.attrs()
        return self._new_handle(request, self.folder.open(path, _os_flags(pflags), attrs.mode))

    def _close(self, body: _Reader, request: int) -> bytes:
        handle = self.handles.pop(body.string(), None)
        if handle is None:
            raise BadMessage("no such handle")
        if isinstance(handle, _File):
            handle.close()
        return _status(request, OK)

    def _read(self, body: _Reader, request: int) -> bytes:
        file = self._handle(_File, body)
        offset, size = body.u64(), body.u32()
        data = file.read(offset, min(size, MAX_READ))
        if not data:
            return _status(request, EOF)
        return _packet(DATA, _u32(request) + _string(data))

    def _write(self, body: _Reader, request: int) -> bytes:
        file = self._handle(_File, body)
        offset, data = body.u64(), body.string()
        if file.own is None:
            raise PermissionError("the file is not open for writing")
        file.write(offset, data)
        return _status(request, OK)

    def _attrs(self, request: int, st: os.stat_result) -> bytes:
        return _packet(ATTRS, _u32(request) + _encode(st))

    def _lstat(self, body: _Reader, request: int) -> bytes:
        return self._attrs(request, self.folder.stat(body.path(), follow=False))

    def _stat(self, body: _Reader, request: int) -> bytes:
        return self._attrs(request, self.folder.stat(body.path()))

    def _fstat(self, body: _Reader, request: int) -> bytes:
        return self._attrs(request, os.fstat(self._handle(_File, body).fd))

    def _setstat(self, body: _Reader, request: int) -> bytes:
        self.folder.set(body.path(), body.attrs())
        return _status(request, OK)

    def _fsetstat(self, body: _Reader, request: int) -> bytes:
        file = self._handle(_File, body)
        self.folder.writable()
        file.set(body.attrs(), lambda: self.folder.path(file.named, True))
        return _status(request, OK)

    def _opendir(self, body: _Reader, request: int) -> bytes:
        real, names = self.folder.listing(body.path())
        listing = _Listing(real, [".", "..", *names])  # as a local folder lists (ls -a)
        return self._new_handle(request, listing)

    def _readdir(self, body: _Reader, request: int) -> bytes:
        listing = self._handle(_Listing, body)
        entries = []
        for name in listing.names:  # the rest, a batch at a time
            # the share's own parent is not the guest's to see: its `..` is itself
            top = name == ".." and listing.folder == self.folder.real_root
            try:
                st = os.lstat(listing.folder if top else os.path.join(listing.folder, name))
            except OSError:
                continue  # gone since the listing
            raw = os.fsencode(name)
            entries.append(_string(raw) + _string(raw) + _encode(st))
            if len(entries) == NAMES:
                break
        if not entries:
            return _status(request, EOF)
        return _packet(NAME, _u32(request) + _u32(len(entries)) + b"".join(entries))

    def _remove(self, body: _Reader, request: int) -> bytes:
        self.folder.remove(body.path())
        return _status(request, OK)

    def _mkdir(self, body: _Reader, request: int) -> bytes:
        path, attrs = body.path(), body.attrs()
        self.folder.mkdir(path, attrs.mode)
        return _status(request, OK)

    def _rmdir(self, body: _Reader, request: int) -> bytes:
        self.folder.rmdir(body.path())
        return _status(request, OK)

    def _realpath(self, body: _Reader, request: int) -> bytes:
        raw = os.fsencode(self.folder.canonical(body.path()))
        return _packet(NAME, _u32(request) + _u32(1) + _string(raw) + _string(raw) + _u32(0))

    def _rename(self, body: _Reader, request: int) -> bytes:
        self.folder.rename(body.path(), body.path(), replace=False)
        return _status(request, OK)

    def _readlink(self, body: _Reader, request: int) -> bytes:
        raw = os.fsencode(self.folder.readlink(body.path()))
        return _packet(NAME, _u32(request) + _u32(1) + _string(raw) + _string(raw) + _u32(0))

    def _symlink(self, body: _Reader, request: int) -> bytes:
        # OpenSSH's order, which sshfs follows: the link's target first, then the link
        target, path = body.path(), body.path()
        self.folder.symlink(target, path)
        return _status(request, OK)

    def _extended(self, body: _Reader, request: int) -> bytes:
        name = body.string()
        if name == b"posix-rename@openssh.com":
            self.folder.rename(body.path(), body.path(), replace=True)
        elif name == b"hardlink@openssh.com":
            self.folder.link(body.path(), body.path())
        elif name == b"fsync@openssh.com":
            os.fsync(self._handle(_File, body).fd)
        elif name == b"statvfs@openssh.com" and name in self.extensions:
            return _packet(EXTENDED_REPLY, _u32(request) + self._statvfs(body.path()))
        else:
            return _status(request, OP_UNSUPPORTED, name.decode(errors="replace"))
        return _status(request, OK)

    def _statvfs(self, path: str) -> bytes:
        st = self.folder.statvfs(path)
        flag = (ST_RDONLY if self.folder.read_only or st.f_flag & os.ST_RDONLY else 0) | (
            ST_NOSUID if st.f_flag & os.ST_NOSUID else 0
        )
        fields = (st.f_bsize, st.f_frsize, st.f_blocks, st.f_bfree, st.f_bavail, st.f_files)
        fields += (st.f_ffree, st.f_favail, st.f_fsid, flag, st.f_namemax)
        return struct.pack(">11Q", *(max(0, v) & (2**64 - 1) for v in fields))


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def _take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise BadMessage("a request shorter than its fields")
        taken = self.data[self.at : self.at + size]
        self.at += size
        return taken

    def u32(self) -> int:
        return int.from_bytes(self._take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self._take(8), "big")

    def string(self) -> bytes:
        return self._take(self.u32())

    def path(self) -> str:
        raw = self.string()
        if b"\0" in raw:
            raise BadMessage("a path with a NUL byte")
        return os.fsdecode(raw)

    def attrs(self) -> Attrs:
        flags, attrs = self.u32(), Attrs()
        if flags & ATTR_SIZE:
            attrs.size = self.u64()
        if flags & ATTR_UIDGID:
            self.u32(), self.u32()  # owners stay the user's
        if flags & ATTR_PERMISSIONS:
            attrs.mode = self.u32()
        if flags & ATTR_ACMODTIME:
            attrs.atime, attrs.mtime = self.u32(), self.u32()
        if flags & ATTR_EXTENDED:
            for _ in range(self.u32()):
                self.string(), self.string()
        return attrs


def _set(path: str | int, attrs: Attrs) -> None:
    """What sshfs changes: mode, size, times (owners stay the user's), of a path or an open
    file's descriptor."""
    if attrs.mode is not None:
        os.chmod(path, attrs.mode & 0o7777)
    if attrs.size is not None:
        os.truncate(path, attrs.size)
    if attrs.atime is not None and attrs.mtime is not None:
        now = os.stat(path) if isinstance(path, int) else os.lstat(path)
        # SFTP v3 carries whole seconds: times equal to the file's own, so truncated (edits.py
        # setting a file's times to what they are), must not cut its nanoseconds
        if (int(now.st_atime), int(now.st_mtime)) != (attrs.atime, attrs.mtime):
            os.utime(path, (attrs.atime, attrs.mtime))


def _os_flags(pflags: int) -> int:
    access = pflags & (F_READ | F_WRITE)
    flags = {F_WRITE: os.O_WRONLY, F_READ | F_WRITE: os.O_RDWR}.get(access, os.O_RDONLY)
    for sftp, posix in (
        (F_APPEND, os.O_APPEND), (F_CREAT, os.O_CREAT), (F_TRUNC, os.O_TRUNC), (F_EXCL, os.O_EXCL),
    ):  # fmt: skip
        if pflags & sftp:
            flags |= posix
    return flags


def _encode(st: os.stat_result) -> bytes:
    flags = ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME
    times = (min(max(int(t), 0), 2**32 - 1) for t in (st.st_atime, st.st_mtime))
    return struct.pack(">IQIII", flags, st.st_size, st.st_uid, st.st_gid, st.st_mode) + (
        struct.pack(">II", *times)
    )


def _code(error: OSError) -> tuple[int, str]:
    """An OSError as the status sshfs shows as errno (ENOENT, EACCES; else EPERM)."""
    if isinstance(error, PermissionError):
        return PERMISSION_DENIED, str(error)
    if isinstance(error, FileNotFoundError):
        return NO_SUCH_FILE, str(error)
    return FAILURE, str(error)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def _string(data: bytes) -> bytes:
    return _u32(len(data)) + data


def _packet(kind: int, body: bytes) -> bytes:
    return _u32(len(body) + 1) + bytes((kind,)) + body


def _status(request: int, code: int, message: str = "") -> bytes:
    return _packet(STATUS, _u32(request) + _u32(code) + _string(message.encode()) + _string(b""))
