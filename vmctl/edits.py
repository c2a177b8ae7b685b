"""Edits that containers notice (issue 14, item 4): a file made, changed, renamed or deleted in
a shared folder on the host wakes an inotify watcher on that bind mount in a container
(nodemon, webpack, flask's reloader). Neither virtiofs nor sshfs carries host events, so:

    host    a watch on every folder below each share (Linux: fanotify as root, else inotify;
            kept as folders come and go) turns each change into an Edit: what happened,
            where, and the file's times as the host has them now
    wire    one JSON line per edit, over an SSH exec channel of the host agent's connection,
            in batches: an empty line ends one, and the guest answers it when it is done;
            what is heard meanwhile waits here (`Heard`), so the emulated guest sets the pace
    guest   `GUEST_SCRIPT` (Debian's python3, as root) makes the guest kernel raise an event
            on the same path: utime() to the very times the host has (a no-op on the file,
            so nothing the user made is changed), which inotify reports as IN_ATTRIB

What the watcher sees: a change names its file; a creation names the new file and touches its
folder; a deletion cannot name a file that is gone, so it touches the folder the file was in
(IN_ATTRIB on the watched folder itself); a rename does both. Tools that rescan a folder when
it changes (chokidar, watchdog) so see deletions too, which Lima's forwarding misses. A read-only
share refuses utime: it carries no events.

What the VM itself wrote is not carried back: the guest's kernel raised its events already. The
reverse SFTP share makes those writes in this process and says so (`OwnWrites`); virtiofs and
9p (which need root) make them in virtiofsd and QEMU, which fanotify names (`VmWatcher`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shlex
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_ISDIR, IN_IGNORED = 0x400, 0x800, 0x40000000, 0x8000
WATCHED = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
KINDS = (
    (IN_CREATE, "create"), (IN_CLOSE_WRITE, "modify"), (IN_DELETE, "delete"),
    (IN_MOVED_FROM, "delete"), (IN_MOVED_TO, "create"),
)  # fmt: skip
_EVENT = struct.Struct("iIII")
# fanotify's: the same bits as inotify's for these events (FAN_ONDIR is IN_ISDIR)
FAN_CLOEXEC, FAN_UNLIMITED_QUEUE, FAN_REPORT_DFID_NAME = 0x1, 0x10, 0xC00
FAN_MARK_ADD, FAN_MARK_ONLYDIR, FAN_EVENT_ON_CHILD = 0x1, 0x8, 0x08000000
FAN_EVENT_INFO_TYPE_DFID_NAME, AT_FDCWD, MAX_HANDLE_SZ = 2, -100, 128
_FAN_EVENT = struct.Struct("IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_FAN_INFO = struct.Struct("BBHIIIi")  # type, pad, len, fsid (2), handle_bytes, handle_type
VM_PROCESSES = ("virtiofsd", "qemu-system")  # /proc/PID/comm of the VM's file servers
FLOOD = 256  # paths in one batch past which only their folders are touched
ECHO = 10.0  # s the VM's own write to a path is remembered


@dataclass(frozen=True)
class Edit:
    kind: str  # "create" | "modify" | "delete"
    path: str
    times: tuple[int, int] | None = None  # (atime, mtime) in ns, as the host has them
    folder_times: tuple[int, int] | None = None  # its folder's, for a create or a delete


def to_line(edit: Edit) -> bytes:
    fields = {"kind": edit.kind, "path": edit.path, "times": edit.times}
    return json.dumps({**fields, "folder_times": edit.folder_times}).encode() + b"\n"


def guest_command() -> str:
    return shlex.join(["sudo", "-n", "python3", "-I", "-c", GUEST_SCRIPT])


def edit_for(mask: int, path: str) -> Edit | None:
    """The Edit an inotify event means, with the host's times for a file still there."""
    kind = next((name for bit, name in KINDS if mask & bit), None)
    if kind is None:
        return None
    folder = None if kind == "modify" else _times(os.path.dirname(path))
    times = None if kind == "delete" else _times(path)
    if kind != "delete" and times is None:  # gone again already
        return Edit("delete", path, None, _times(os.path.dirname(path)))
    return Edit(kind, path, times, folder)


def coalesced(batch: list[Edit]) -> list[Edit]:
    """One edit per path (its last, keeping a creation's or deletion's folder times); past
    FLOOD paths, one per folder instead. Each edit costs the emulated guest up to two utime()
    calls, and a container making thousands of files in a shared folder sends each back
    here: forwarded one by one, they kept the guest's sshd too busy to open the engine's
    channels (bench/README.md). A watcher is still woken, by its folder."""
    last: dict[str, Edit] = {}
    for edit in batch:
        _keep(last, edit)
    if len(last) <= FLOOD:
        return list(last.values())
    folders = dict.fromkeys(os.path.dirname(path) for path in last)
    return [Edit("modify", folder, _times(folder)) for folder in folders]


def _keep(last: dict[str, Edit], edit: Edit) -> None:
    before = last.pop(edit.path, None)
    if before is not None and edit.folder_times is None:
        edit = replace(edit, folder_times=before.folder_times)
    last[edit.path] = edit


class Heard:
    """Edits heard and not carried yet, one per path. The watcher adds them as fast as the
    host makes them; the carrier takes them all once the guest has done its last batch. While
    an emulated guest works, a flood (a container's `npm install`) piles up here and goes as
    touches of its folders, and the guest's sshd is never left behind a queue of edits: sent
    as heard, a steady stream of them starved the engine's channels (bench/README.md)."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._edits: dict[str, Edit] = {}

    def add(self, batch: list[Edit]) -> None:
        with self._ready:
            for edit in batch:
                _keep(self._edits, edit)
            if self._edits:
                self._ready.notify()

    def take(self, timeout: float | None = None) -> list[Edit]:
        """All heard so far, once there is any (none, after `timeout` s)."""
        with self._ready:
            self._ready.wait_for(lambda: self._edits, timeout)
            taken, self._edits = self._edits, {}
        return list(taken.values())


class OwnWrites:
    """The paths the VM changed through this process, as it left them. Their events are echoes:
    carried back they cost the emulated guest utime() calls for nothing (200 files made in a
    container took 3.18 s with them, 0.34 s without, bench/README.md). An edit is an echo
    while its path is being changed by the VM, or when the file is as the VM left it (the
    same inode, size, mtime and ctime; gone, after a removal) within ECHO s; an edit on the
    host after that changes them, and is carried."""

    KEPT = 8  # states of one path (a file the VM writes again and again)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}
        self._left: dict[str, tuple[float, tuple[_State, ...]]] = {}

    @contextlib.contextmanager
    def changing(self, *changed: str) -> Iterator[None]:
        """Around one change the VM asked for: what the watcher sees meanwhile is the VM's.
        The folders of the paths change too (their mtime, when an entry comes or goes)."""
        paths = dict.fromkeys([*changed, *map(os.path.dirname, changed)])
        with self._lock:
            for path in paths:
                self._busy[path] = self._busy.get(path, 0) + 1
        try:
            yield
        finally:
            now = time.monotonic()
            left = [(path, _state(path)) for path in paths]
            with self._lock:
                for path, state in left:
                    self._busy[path] -= 1
                    if not self._busy[path]:
                        del self._busy[path]
                    since, states = self._left.get(path, (now, ()))
                    kept = states if now - since < ECHO else ()
                    self._left[path] = (now, (*kept, state)[-self.KEPT :])
                if len(self._left) > 4 * 1024:
                    self._left = {p: v for p, v in self._left.items() if now - v[0] < ECHO}

    def echo(self, edit: Edit) -> bool:
        with self._lock:
            known = edit.path in self._busy or edit.path in self._left
        if not known:  # no stat for what the VM never touched (every edit, on virtiofs)
            return False
        state = _state(edit.path)
        with self._lock:
            if edit.path in self._busy:
                return True
            since, states = self._left.pop(edit.path, (0.0, ()))
            if time.monotonic() - since < ECHO and state in states:
                self._left[edit.path] = (since, states)
                return True
        return False  # the user's: what the VM left is history now


_State = tuple[int, int, int, int] | None


def _state(path: str) -> _State:
    """What tells the VM's last change of a file from the user's next (timestamps alone are
    a clock tick coarse)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _times(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_atime_ns, st.st_mtime_ns)


class Watcher:
    """inotify on every folder below `roots` (Linux), new folders watched as they come."""

    def __init__(self, roots: list[str]) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._add = libc.inotify_add_watch
        self.fd = libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.folders: dict[int, str] = {}
        for root in roots:
            self._watch_tree(root)

    def _watch_tree(self, root: str) -> None:
        for folder, _dirs, _files in os.walk(root):
            wd = self._add(self.fd, os.fsencode(folder), WATCHED)
            if wd >= 0:
                self.folders[wd] = folder

    def batches(self) -> Iterator[list[Edit]]:
        """The edits of each read of the queue, one event or thousands (`npm install`); blocks
        for the next, and ends when the descriptor is closed."""
        while True:
            try:
                data = os.read(self.fd, 64 * 1024)
            except OSError:
                return
            yield list(self._parse(data))

    def _parse(self, data: bytes) -> Iterator[Edit]:
        offset = 0
        while offset < len(data):
            wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size : offset + _EVENT.size + size]
            offset += _EVENT.size + size
            if mask & IN_IGNORED:
                self.folders.pop(wd, None)
                continue
            folder = self.folders.get(wd)
            if folder is None:
                continue
            edit = self._event(mask, os.path.join(folder, os.fsdecode(raw.rstrip(b"\0"))))
            if edit is not None:
                yield edit

    def _event(self, mask: int, path: str, by_vm: bool = False) -> Edit | None:
        """The Edit of one event, none for what the VM wrote; a new folder is watched, the
        VM's too (the user may write in it later)."""
        if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
            self._watch_tree(path)
        return None if by_vm else edit_for(mask, path)

    def close(self) -> None:
        os.close(self.fd)


def watcher(roots: list[str]) -> Watcher:
    """A VmWatcher where fanotify may name who wrote (root: virtiofs and 9p need it too),
    else a Watcher."""
    if os.geteuid() == 0:
        with contextlib.suppress(OSError):
            return VmWatcher(roots)
    return Watcher(roots)


class VmWatcher(Watcher):
    """As Watcher, by fanotify (root), which names the process behind each change: what the
    VM's own file servers wrote (virtiofsd, QEMU's 9p) is the guest's, and its kernel raised
    those events already. Carried back, 5,000 files made in a container took 26.6 s against
    3.6 s on a volume (bench/README.md): each costs the emulated guest utime() calls."""

    def __init__(self, roots: list[str]) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.fanotify_mark.argtypes = [
            ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p,
        ]  # fmt: skip
        self._mark, self._handle_of = libc.fanotify_mark, libc.name_to_handle_at
        flags = FAN_CLOEXEC | FAN_UNLIMITED_QUEUE | FAN_REPORT_DFID_NAME
        self.fd = libc.fanotify_init(flags, os.O_RDONLY)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "fanotify_init")
        self.folders: dict[tuple[int, int, int, bytes], str] = {}  # by fsid and handle
        try:
            for root in roots:
                self._watch(root)  # a file system without handles: inotify's, then
                self._watch_tree(root)
        except OSError:
            os.close(self.fd)
            raise

    def _watch_tree(self, root: str) -> None:
        for folder, _dirs, _files in os.walk(root):
            with contextlib.suppress(OSError):
                self._watch(folder)

    def _watch(self, folder: str) -> None:
        mask = WATCHED | IN_ISDIR | FAN_EVENT_ON_CHILD
        path = os.fsencode(folder)
        if self._mark(self.fd, FAN_MARK_ADD | FAN_MARK_ONLYDIR, mask, AT_FDCWD, path) != 0:
            raise OSError(ctypes.get_errno(), f"fanotify_mark {folder}")
        self.folders[self._key(folder)] = folder

    def _key(self, folder: str) -> tuple[int, int, int, bytes]:
        """What fanotify names a folder by: its file system's id and its file handle."""
        buf = ctypes.create_string_buffer(8 + MAX_HANDLE_SZ)
        struct.pack_into("I", buf, 0, MAX_HANDLE_SZ)
        mount_id = ctypes.c_int()
        if self._handle_of(AT_FDCWD, os.fsencode(folder), buf, ctypes.byref(mount_id), 0) != 0:
            raise OSError(ctypes.get_errno(), f"name_to_handle_at {folder}")
        size, kind = struct.unpack_from("Ii", buf)
        fsid = os.statvfs(folder).f_fsid
        return (fsid & 0xFFFFFFFF, fsid >> 32, kind, buf.raw[8 : 8 + size])

    def _parse(self, data: bytes) -> Iterator[Edit]:
        offset = 0
        while offset + _FAN_EVENT.size <= len(data):
            length, _vers, _res, meta, mask, fd, pid = _FAN_EVENT.unpack_from(data, offset)
            info, offset = offset + meta, offset + length
            if fd >= 0:
                os.close(fd)
            while info < offset:
                kind, _pad, size, fsid0, fsid1, handle_size, handle_kind = _FAN_INFO.unpack_from(
                    data, info
                )
                if kind == FAN_EVENT_INFO_TYPE_DFID_NAME:
                    handle = info + _FAN_INFO.size
                    key = (fsid0, fsid1, handle_kind, data[handle : handle + handle_size])
                    name = data[handle + handle_size : info + size].split(b"\0", 1)[0]
                    folder = self.folders.get(key)
                    if folder is not None:
                        path = os.path.join(folder, os.fsdecode(name))
                        if (edit := self._event(mask, path, _by_vm(pid))) is not None:
                            yield edit
                info += size


def _by_vm(pid: int) -> bool:
    """Read each time, not cached: a pid is reused once its process has gone."""
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip().startswith(VM_PROCESSES)
    except OSError:
        return False


# Runs in the guest as root (`python3 -I -c`), reading Edits from stdin, one JSON line each.
# Only ever the host's own times are set: never "now", so no file's times change.
GUEST_SCRIPT = """
import json, os, sys
def touch(path, times):
    if times:
        try:
            os.utime(path, ns=tuple(times), follow_symlinks=False)
        except OSError:
            pass
for line in sys.stdin:
    if not line.strip():  # the end of a batch: the host sends the next when told it is done
        print(flush=True)
        continue
    edit = json.loads(line)
    touch(edit["path"], edit["times"])
    touch(os.path.dirname(edit["path"]), edit["folder_times"])
"""
