"""Reverse SFTP: a host folder in the VM over the VM's own SSH connection, for hosts whose
QEMU has neither virtiofs nor 9p (as Lima's reverse-sshfs does it). The guest's `sshfs -o
slave` speaks SFTP on its stdin and stdout, which an SSH exec channel carries to this side,
where paramiko's SFTP server answers from the folder, as the user running vmctl.

Ownership follows: every file the VM makes there is made by this process, so it belongs to
the user on the host, whoever (root in a container) asked for it; and the user's own files
are as writable from the VM as they are for the user. A read-only share refuses every write
here as well as being mounted `ro` in the guest.

What the VM changes here is told to `own` (edits.OwnWrites), so that the host agent does not
carry those changes back to the guest as host edits.

Paths arrive as the guest names them, which is the host's path (shared at the same path);
anything outside the shared folder is refused, and so is a path that a symbolic link leads out
of it. The guest's kernel resolves links in the guest (as with virtiofs and 9p), so sshfs never
needs this side to follow one out; but a link the VM made, or the user has, would otherwise
take an open, a stat or a write wherever it points, as the user.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Callable

import paramiko
from paramiko.sftp import SFTP_FAILURE, SFTP_OK, SFTP_PERMISSION_DENIED

from vmctl.edits import OwnWrites
from vmctl.shares import Share

RETRY = 10.0  # s between mounts of one share whose sshfs ended
WRITES = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def mount_command(share: Share) -> str:
    """sshfs in the foreground (the channel lives as long as the mount), readable by every
    user in the guest, the engine's containers included."""
    options = "slave,allow_other" + (",ro" if share.read_only else "")
    mkdir = shlex.join(["sudo", "-n", "mkdir", "-p", share.guest])
    mount = shlex.join(["sudo", "-n", "sshfs", "-f", "-o", options, f":{share.host}", share.guest])
    return f"{mkdir} && exec {mount}"


def serve(
    transport: paramiko.Transport, share: Share, own: OwnWrites, log: Callable[[str], None]
) -> threading.Thread:
    """Mount `share` in the guest and answer its SFTP requests until sshfs exits; then `log`
    is told what sshfs said (a missing sshfs, a busy mount point...)."""
    channel = transport.open_session()
    channel.exec_command(mount_command(share))
    server = paramiko.SFTPServer(channel, "sftp", None, Folder, share.host, share.read_only, own)
    server.daemon = True
    server.start()
    threading.Thread(target=_report, args=(server, channel, share, log), daemon=True).start()
    return server


def _report(server: threading.Thread, channel, share: Share, log: Callable[[str], None]) -> None:
    said = b""
    while chunk := channel.recv_stderr(4096):
        said += chunk
    server.join()
    words = said.decode(errors="replace").strip() or "(nothing)"
    log(f"the sftp share of {share.host} ended (status {channel.recv_exit_status()}): {words}")


class Mounts:
    """The shares, kept mounted over whichever SSH connection is current: one whose sshfs
    ended (a guest not ready for it yet, a reboot, a dropped connection) is mounted again at
    the next `ensure`. What sshfs said is logged when it changes, not at every retry."""

    def __init__(
        self, shares: tuple[Share, ...], log: Callable[[str], None], own: OwnWrites
    ) -> None:
        self.shares = shares
        self.log = log
        self.own = own
        self.serving: dict[str, threading.Thread] = {}
        self.said: dict[str, str] = {}
        self.tried: dict[str, float] = {}  # monotonic time of each share's last mount
        self.lock = threading.Lock()

    def ensure(self, transport: paramiko.Transport) -> None:
        """Mount what is not mounted, each at most once per RETRY s (every try costs an
        emulated guest a second of sudo and sshfs)."""
        with self.lock:
            for share in self.shares:
                running = self.serving.get(share.tag)
                if running is not None and running.is_alive():
                    continue
                if time.monotonic() < self.tried.get(share.tag, -RETRY) + RETRY:
                    continue
                self.tried[share.tag] = time.monotonic()
                self.serving[share.tag] = serve(transport, share, self.own, self._once(share))

    def _once(self, share: Share) -> Callable[[str], None]:
        def say(message: str) -> None:
            if self.said.get(share.tag) != message:
                self.said[share.tag] = message
                self.log(message)

        return say


class Folder(paramiko.SFTPServerInterface):
    """One host folder, as the SFTP server's file system."""

    def __init__(self, server, root: str, read_only: bool, own: OwnWrites | None = None) -> None:
        super().__init__(server)
        self.root = os.path.normpath(root)
        self.real_root = os.path.realpath(self.root)
        self.read_only = read_only
        self.own = own or OwnWrites()

    def _path(self, path: str, writing: bool = False, follow: bool = True) -> str:
        """The host path that an operation on the guest's `path` acts on: its links resolved
        (the last one too when the operation `follow`s it, as open and stat do), and still in
        the folder."""
        wanted = os.path.normpath(path)
        if writing and self.read_only:
            raise PermissionError(f"{self.root} is shared read-only")
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

    def canonicalize(self, path: str) -> str:
        return os.path.normpath(path if path.startswith("/") else os.path.join(self.root, path))

    def open(self, path, flags, attr):
        if not flags & WRITES:
            return _answer(lambda: _Handle.open(self._path(path), flags, attr, None))
        named = os.path.normpath(path)
        return self._change(lambda real: _Handle.open(real, flags, attr, self.own, named), path)

    def _change(self, step, *paths: str, follow: bool = True):
        """`step` on the real paths, a change the VM makes (read-only shares refuse it); `own`
        hears of it under the names the guest used, which are those the host's watcher sees."""
        try:
            real = [self._path(path, True, follow) for path in paths]
        except PermissionError:
            return SFTP_PERMISSION_DENIED
        with self.own.changing(*map(os.path.normpath, paths)):
            return _answer(lambda: step(*real))

    def list_folder(self, path):
        return _answer(lambda: _listing(self._path(path)))

    def stat(self, path):
        return _answer(lambda: paramiko.SFTPAttributes.from_stat(os.stat(self._path(path))))

    def lstat(self, path):
        return _answer(
            lambda: paramiko.SFTPAttributes.from_stat(os.lstat(self._path(path, follow=False)))
        )

    def remove(self, path):
        return self._change(lambda real: _ok(os.remove(real)), path, follow=False)

    def rename(self, oldpath, newpath):
        """SFTP's rename never replaces an existing file (sshfs uses posix_rename for that)."""

        def step(old: str, new: str) -> int:
            if os.path.lexists(new):
                return SFTP_FAILURE
            return _ok(os.rename(old, new))

        return self._change(step, oldpath, newpath, follow=False)

    def posix_rename(self, oldpath, newpath):
        step = lambda old, new: _ok(os.replace(old, new))  # noqa: E731
        return self._change(step, oldpath, newpath, follow=False)

    def mkdir(self, path, attr):
        mode = attr.st_mode & 0o7777 if attr.st_mode is not None else 0o777
        return self._change(lambda real: _ok(os.mkdir(real, mode)), path, follow=False)

    def rmdir(self, path):
        return self._change(lambda real: _ok(os.rmdir(real)), path, follow=False)

    def chattr(self, path, attr):
        return _answer(lambda: _ok(_set(self._path(path, True), attr)))

    def readlink(self, path):
        return _answer(lambda: os.readlink(self._path(path, follow=False)))

    def symlink(self, target_path, path):
        """The link is made as asked, pointing anywhere: the guest resolves it in the guest."""
        step = lambda real: _ok(os.symlink(target_path, real))  # noqa: E731
        return self._change(step, path, follow=False)


class _Handle(paramiko.SFTPHandle):
    @classmethod
    def open(
        cls, path: str, flags: int, attr, own: OwnWrites | None, named: str | None = None
    ) -> _Handle:
        """`own`: told of the close of a handle the VM writes with, as `named`."""
        mode = attr.st_mode & 0o7777 if attr.st_mode is not None else 0o666
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0), mode)
        handle = cls(flags)
        handle.filename = path
        handle.named = named or path
        handle.own = own
        opened = os.fdopen(fd, _fdopen_mode(flags))
        handle.readfile = handle.writefile = opened
        return handle

    def stat(self):
        return _answer(lambda: paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno())))

    def chattr(self, attr):
        """On the open file itself where the OS can (its path may be a link by now)."""
        target = self.readfile.fileno() if os.chmod in os.supports_fd else self.filename
        return _answer(lambda: _ok(_set(target, attr)))

    def close(self):
        if self.own is None:
            return super().close()
        with self.own.changing(self.named):  # its close is what the watcher hears
            return super().close()


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _fdopen_mode(flags: int) -> str:
    if flags & os.O_WRONLY:
        return "ab" if flags & os.O_APPEND else "wb"
    if flags & os.O_RDWR:
        return "a+b" if flags & os.O_APPEND else "r+b"
    return "rb"


def _listing(path: str) -> list[paramiko.SFTPAttributes]:
    found = []
    for name in os.listdir(path):
        attrs = paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(path, name)))
        attrs.filename = name
        found.append(attrs)
    return found


def _set(path: str | int, attr) -> None:
    """What sshfs changes: mode, size, times (owners stay the user's), of a path or an open
    file's descriptor."""
    if attr.st_mode is not None:
        os.chmod(path, attr.st_mode & 0o7777)
    if attr.st_size is not None:
        os.truncate(path, attr.st_size)
    if attr.st_atime is not None and attr.st_mtime is not None:
        now = os.stat(path) if isinstance(path, int) else os.lstat(path)
        # SFTP v3 carries whole seconds: times equal to the file's own, so truncated (edits.py
        # setting a file's times to what they are), must not cut its nanoseconds
        if (int(now.st_atime), int(now.st_mtime)) != (attr.st_atime, attr.st_mtime):
            os.utime(path, (attr.st_atime, attr.st_mtime))


def _ok(_none: None) -> int:
    return SFTP_OK


def _answer(step):
    """An OSError as the SFTP status the guest shows as errno (ENOENT, EACCES...)."""
    try:
        return step()
    except PermissionError:
        return SFTP_PERMISSION_DENIED
    except OSError as e:
        return paramiko.SFTPServer.convert_errno(e.errno)
