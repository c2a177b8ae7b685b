"""Edits that containers notice (issue 14, item 4): a file made, changed, renamed or deleted in
a shared folder on the host wakes an inotify watcher on that bind mount in a container
(nodemon, webpack, flask's reloader). Neither virtiofs nor sshfs carries host events, so:

    host    an inotify watch on every folder below each share (Linux; kept as folders come
            and go) turns each change into an Edit: what happened, where, and the file's
            times as the host has them now
    wire    one JSON line per edit, over an SSH exec channel of the host agent's connection
    guest   `GUEST_SCRIPT` (Debian's python3, as root) makes the guest kernel raise an event
            on the same path: utime() to the very times the host has (a no-op on the file,
            so nothing the user made is changed), which inotify reports as IN_ATTRIB

What the watcher sees: a change names its file; a creation names the new file and touches its
folder; a deletion cannot name a file that is gone, so it touches the folder the file was in
(IN_ATTRIB on the watched folder itself); a rename does both. Tools that rescan a folder when
it changes (chokidar, watchdog) so see deletions too, which Lima's forwarding misses. A read-only
share refuses utime: it carries no events.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shlex
import struct
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
FLOOD = 256  # paths in one batch past which only their folders are touched


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
        before = last.pop(edit.path, None)
        if before is not None and edit.folder_times is None:
            edit = replace(edit, folder_times=before.folder_times)
        last[edit.path] = edit
    if len(last) <= FLOOD:
        return list(last.values())
    folders = dict.fromkeys(os.path.dirname(path) for path in last)
    return [Edit("modify", folder, _times(folder)) for folder in folders]


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
            path = os.path.join(folder, os.fsdecode(raw.rstrip(b"\0")))
            if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                self._watch_tree(path)
            edit = edit_for(mask, path)
            if edit is not None:
                yield edit

    def close(self) -> None:
        os.close(self.fd)


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
    edit = json.loads(line)
    touch(edit["path"], edit["times"])
    touch(os.path.dirname(edit["path"]), edit["folder_times"])
"""
