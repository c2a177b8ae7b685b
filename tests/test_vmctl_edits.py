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

import watchkit

from vmctl import edits


def test_the_host_watcher_reports_each_edit_with_the_hosts_times(tmp_path):
    """Each step waits for its edits before the next: the watcher stats what it reports,
    and a file already renamed away by then is (rightly) reported as gone."""
    watcher = edits.Watcher([str(tmp_path)])
    seen: queue.Queue[edits.Edit] = queue.Queue()

    def collect() -> None:
        for batch in watcher.batches():
            for edit in batch:
                seen.put(edit)

    threading.Thread(target=collect, daemon=True).start()

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
    watcher.close()


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
        subprocess.run(
            [sys.executable, "-I", "-c", edits.GUEST_SCRIPT], input=b"".join(lines), check=True
        )
        heard = [output.next(), output.next()]
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
