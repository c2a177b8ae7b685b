"""Edits that containers notice, both halves on this host with real inotify: the host's
watcher turns changes into Edits with the host's times, and the guest's script, fed those
lines, wakes an inotify watcher (busybox inotifyd, as in the VM test) on the same paths
without changing any file's times."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import types

import watchkit

from vmctl import edits, hostagent
from vmctl.sftpserver import Folder


def test_the_host_watcher_reports_each_edit_with_the_hosts_times(tmp_path):
    """Each step waits for its edits before the next: the watcher stats what it reports,
    and a file already renamed away by then is (rightly) reported as gone."""
    collector = _Collector(edits.Watcher([str(tmp_path)]), tmp_path)
    seen = collector.seen

    def next_edits(count: int) -> list[tuple[str, str]]:
        got = [seen.get(timeout=120) for _ in range(count)]
        return [(e.kind, os.path.relpath(e.path, tmp_path)) for e in got]

    (tmp_path / "sub").mkdir()  # a new folder is watched too
    assert next_edits(1) == [("create", "sub")]
    (tmp_path / "sub" / "a.txt").write_text("a")
    assert next_edits(2) == [("create", "sub/a.txt"), ("modify", "sub/a.txt")]
    os.rename(tmp_path / "sub" / "a.txt", tmp_path / "b.txt")
    assert next_edits(2) == [("delete", "sub/a.txt"), ("create", "b.txt")]
    st = os.lstat(tmp_path / "b.txt")
    (tmp_path / "b.txt").unlink()
    (delete,) = [seen.get(timeout=120)]
    assert (delete.kind, delete.times) == ("delete", None)
    assert delete.folder_times == _times(tmp_path)
    assert st.st_mtime_ns > 0
    collector.close()


def test_an_edit_found_gone_is_carried_as_a_deletion_with_its_folder(tmp_path):
    edit = edits.edit_for(edits.IN_CLOSE_WRITE, str(tmp_path / "gone"))
    st = os.lstat(tmp_path)
    assert edit == edits.Edit(
        "delete", str(tmp_path / "gone"), None, (st.st_atime_ns, st.st_mtime_ns)
    )


def test_the_guest_script_wakes_an_inotify_watcher_and_changes_no_times(tmp_path):
    binary = watchkit.build(tmp_path / "inotifywatch")
    (tmp_path / "w").mkdir()
    tmp_path = tmp_path / "w"
    (tmp_path / "app.py").write_text("print(1)\n")
    before = {p.name: os.lstat(p) for p in (tmp_path, tmp_path / "app.py")}
    watch = subprocess.Popen([binary, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        output = watchkit.Lines(watch.stdout)
        assert output.next() == "watching"
        lines = [
            edits.to_line(edits.edit_for(edits.IN_CLOSE_WRITE, str(tmp_path / "app.py"))),
            edits.to_line(edits.Edit("delete", str(tmp_path / "old.py"), None, _times(tmp_path))),
        ]
        done = subprocess.run(
            [sys.executable, "-I", "-c", edits.GUEST_SCRIPT],
            input=b"".join(lines) + b"\n" + lines[0] + b"\n",  # two batches
            capture_output=True,
            check=True,
        )
        heard = [output.next(), output.next()]
        assert done.stdout == b"\n\n"  # each batch's end answered
    finally:
        watch.kill()
        watch.wait()
    assert heard == [f"a\t{tmp_path}\tapp.py", f"a\t{tmp_path}"]
    for name, st in before.items():
        now = os.lstat(tmp_path / name if name == "app.py" else tmp_path)
        assert (now.st_atime_ns, now.st_mtime_ns) == (st.st_atime_ns, st.st_mtime_ns)


def _times(path) -> tuple[int, int]:
    st = os.lstat(path)
    return (st.st_atime_ns, st.st_mtime_ns)


def test_a_batch_carries_one_edit_a_path_with_its_folders_times():
    create = edits.Edit("create", "/p/app.py", (1, 2), (3, 4))
    modify = edits.Edit("modify", "/p/app.py", (5, 6), None)
    other = edits.Edit("delete", "/p/old.py", None, (7, 8))
    assert edits.coalesced([create, other, modify]) == [
        other,
        edits.Edit("modify", "/p/app.py", (5, 6), (3, 4)),  # the folder is touched too
    ]
    assert edits.coalesced([]) == []


def test_a_flood_of_edits_touches_each_folder_once(tmp_path):
    """`npm install` in a shared folder: thousands of files come back as edits; past FLOOD
    paths in a batch only their folders are carried (bench/README.md: one by one, a 10,000-file
    tree kept the guest's sshd from opening the engine's channels)."""
    folders = [tmp_path / name for name in ("a", "b", "c")]
    for folder in folders:
        folder.mkdir()
    flood = [
        edits.Edit("create", str(folders[i % 3] / f"f{i}"), (1, 1), (2, 2))
        for i in range(edits.FLOOD + 1)
    ]
    carried = edits.coalesced(flood)
    assert carried == [edits.Edit("modify", str(f), _times(f)) for f in folders]


def test_what_the_vm_wrote_through_its_share_is_not_carried_back(tmp_path):
    """The reverse SFTP share tells OwnWrites of each change the VM makes: the watcher still
    hears them (the host's inotify cannot tell who wrote), and they are dropped as echoes;
    the user's edits, the same files' included, are carried."""
    own = edits.OwnWrites()
    folder = Folder(str(tmp_path), read_only=False, own=own)
    collector = _Collector(edits.Watcher([str(tmp_path)]), tmp_path)
    made = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    folder.mkdir(f"{tmp_path}/d", 0o755)
    handle = folder.open(f"{tmp_path}/d/a.txt", made, 0o644)
    handle.write(0, b"from the vm")
    handle.close()
    folder.rename(f"{tmp_path}/d/a.txt", f"{tmp_path}/b.txt", replace=True)
    folder.open(f"{tmp_path}/gone.txt", made, 0o644).close()
    folder.remove(f"{tmp_path}/gone.txt")
    (tmp_path / "user.txt").write_text("the user's file")
    heard = collector.until(tmp_path / "user.txt", "modify")
    carried = {(e.kind, os.path.relpath(e.path, tmp_path)) for e in heard if not own.echo(e)}
    assert carried == {("create", "user.txt"), ("modify", "user.txt")}
    assert len(heard) > len(carried)  # the VM's own were heard, and dropped
    (tmp_path / "b.txt").write_text("the user's edit")  # of the file the VM made
    heard = collector.until(tmp_path / "b.txt", "modify")
    assert [(e.kind, e.path) for e in heard if not own.echo(e)] == [("modify", f"{tmp_path}/b.txt")]
    collector.close()


def test_an_echo_is_the_path_as_the_vm_left_it_and_only_for_a_while(tmp_path, monkeypatch):
    own = edits.OwnWrites()
    path = tmp_path / "f"
    edit = edits.Edit("modify", str(path))  # what it says is read again from the file
    with own.changing(str(path)):
        path.write_text("vm")
        assert own.echo(edit)  # mid-change: the VM's
    assert own.echo(edit)  # as the VM left it
    path.write_text("user")
    assert not own.echo(edit)  # the user's
    path.write_text("vm")
    assert not own.echo(edit)  # and what the VM left is history
    with own.changing(str(path)):
        path.unlink()
    assert own.echo(edits.Edit("delete", str(path)))
    later = edits.time.monotonic() + edits.ECHO + 1
    monkeypatch.setattr(edits.time, "monotonic", lambda: later)
    assert not own.echo(edits.Edit("delete", str(path)))  # long after: the user's again


def test_what_is_heard_while_the_guest_works_waits_one_edit_a_path():
    heard = edits.Heard()
    create = edits.Edit("create", "/p/app.py", (1, 2), (3, 4))
    heard.add([create, edits.Edit("modify", "/p/app.py", (5, 6))])
    heard.add([])
    heard.add([edits.Edit("delete", "/p/old.py", None, (7, 8))])
    assert heard.take() == [
        edits.Edit("modify", "/p/app.py", (5, 6), (3, 4)),
        edits.Edit("delete", "/p/old.py", None, (7, 8)),
    ]
    assert heard.take(timeout=0.01) == []  # nothing heard
    taker = threading.Thread(target=lambda: taken.append(heard.take()))
    taken: list[list[edits.Edit]] = []
    taker.start()  # nothing heard: it waits
    heard.add([create])
    taker.join(timeout=120)
    assert taken == [[create]]


def test_fanotify_names_the_vms_file_servers_and_their_writes_are_not_carried(tmp_path):
    """As root (virtiofs and 9p need it), the watcher is fanotify's: a write by a process
    named as virtiofsd (or QEMU, for 9p) is the guest's own, in folders the VM made too; the
    user's are carried, one edit per change (fanotify merges a creation and its write)."""
    watcher = edits.watcher([str(tmp_path)])
    assert isinstance(watcher, edits.VmWatcher)  # the suite runs as root, as CI does
    collector = _Collector(watcher, tmp_path)
    vm = subprocess.Popen(
        [sys.executable, "-c", _AS_VIRTIOFSD, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert vm.stdout.readline() == "written\n"  # alive while its events are read
        (tmp_path / "user.txt").write_text("the user's")
        got = collector.until(tmp_path / "user.txt")  # after the VM's: its folder is watched
        (tmp_path / "vm" / "later.txt").write_text("the user's, in the VM's folder")
        got += collector.until(tmp_path / "vm" / "later.txt")
    finally:
        vm.communicate("")
        collector.close()
    assert {os.path.relpath(e.path, tmp_path) for e in got} == {"user.txt", "vm/later.txt"}


class _Collector:
    """A watcher's edits, read in a thread that ends before the watcher is closed (a read of
    a closed descriptor whose number is reused would take the next test's events)."""

    def __init__(self, watcher: edits.Watcher, root) -> None:
        self.watcher, self.end = watcher, root / ".end"
        self.seen: queue.Queue[edits.Edit] = queue.Queue()
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        for batch in self.watcher.batches():
            for edit in batch:
                if edit.path == str(self.end):
                    return
                self.seen.put(edit)

    def until(self, path, kind: str | None = None) -> list[edits.Edit]:
        """The edits up to the first of `path` (of `kind`)."""
        got = [self.seen.get(timeout=120)]
        while got[-1].path != str(path) or kind not in (None, got[-1].kind):
            got.append(self.seen.get(timeout=120))
        return got

    def close(self) -> None:
        self.end.write_text("")
        self.thread.join(timeout=120)
        self.watcher.close()


_AS_VIRTIOFSD = """
import ctypes, os, sys
ctypes.CDLL(None).prctl(15, b"virtiofsd")  # PR_SET_NAME: /proc/PID/comm
os.mkdir(sys.argv[1] + "/vm")
with open(sys.argv[1] + "/vm/made.txt", "w") as f:
    f.write("the VM's")
os.rename(sys.argv[1] + "/vm/made.txt", sys.argv[1] + "/vm/kept.txt")
print("written", flush=True)
sys.stdin.read()
"""


def test_the_guests_script_is_ready_before_the_first_edit_and_started_again_after_a_restart(
    tmp_path,
):
    """The host agent's carrier against a stand-in SSH connection: a channel is opened before
    any edit (sudo and python3 take an emulated guest seconds), and one that closed while the
    carrier waited (the VM restarted) is replaced for the next batch, which is not lost."""
    opened: queue.Queue[_GuestScript] = queue.Queue()
    transport = types.SimpleNamespace(open_session=lambda: _GuestScript(opened))
    guest = types.SimpleNamespace(client=types.SimpleNamespace(get_transport=lambda: transport))
    connection = types.SimpleNamespace(get=lambda wait=None: guest)
    carrier = threading.Thread(
        target=hostagent.carry_edits, args=(connection, [str(tmp_path)], edits.OwnWrites()),
        daemon=True,
    )  # fmt: skip
    carrier.start()
    first = opened.get(timeout=120)  # no edit yet
    (tmp_path / "a.txt").write_text("a")
    assert first.until(b"a.txt")
    first.closed = True
    (tmp_path / "b.txt").write_text("b")
    assert opened.get(timeout=120).until(b"b.txt")


class _GuestScript:
    """An exec channel to edits.GUEST_SCRIPT, answering each batch at once."""

    def __init__(self, opened: queue.Queue) -> None:
        self.closed, self.sent = False, queue.Queue()
        opened.put(self)

    def exec_command(self, command: str) -> None:
        assert command == edits.guest_command()

    def settimeout(self, timeout: float) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        if self.closed:
            raise OSError("Socket is closed")
        self.sent.put(data)

    def recv(self, size: int) -> bytes:
        return b"\n"

    def close(self) -> None:
        self.closed = True

    def until(self, name: bytes) -> bool:
        """True once a batch naming `name` came (the ones before it may name others)."""
        while name not in self.sent.get(timeout=120):
            pass
        return True
