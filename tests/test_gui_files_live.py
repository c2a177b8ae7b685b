"""The Files tab against the real engine (`vmctl-agent serve` on this host): a busybox
container's folders expanded one directory at a time, a big folder's top level read without
its tree, /etc/hostname downloaded byte for byte, and what goes wrong said in words: a path
that vanished, a file too large for where it is saved, a container that exits or is removed
while the tab is open."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest
from agentserver import ok, serving, until
from guikit import AgentOnHost
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from test_copy_cli import helpers_of
from test_gui_details_live import WAIT_MS, open_details
from vmctl_gui.app import Desktop
from vmctl_gui.files_tab import ENTRY, EXITED

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")


@pytest.fixture
def server(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-files"), registry) as server:
        yield server


@pytest.fixture
def desktop(qtbot, server, tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path / "home"))
    desktop = Desktop(AgentOnHost("gui", docker_host=server.url), tray=False,
                      ask=lambda title, text: QMessageBox.StandardButton.No)  # fmt: skip
    qtbot.addWidget(desktop.window)
    desktop.begin()
    desktop.window.show()
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "running", timeout=WAIT_MS)
    yield desktop
    desktop.bridge.shutdown()


def open_files(qtbot, desktop, server, *script: str):
    """A busybox container that runs `script` then sleeps, selected, its Files tab shown at
    `/` once `script` has run; the tab and the container."""
    pane, container = open_details(qtbot, desktop, server, "busybox", "sh", "-c",
                                   "; ".join((*script, "touch /ready", "sleep 600")))  # fmt: skip
    until(lambda: server.docker("exec", container, "test", "-e", "/ready").returncode == 0,
          "the container's script to run")  # fmt: skip
    tab = pane.files
    assert tab.shown_path == ""  # nothing read while the tab is hidden
    pane.tabs.setCurrentWidget(tab)
    desktop.window.tabs.setCurrentWidget(desktop.window.containers_view)
    qtbot.waitUntil(lambda: tab.shown_path == "/" or "Cannot" in tab.status.text(),
                    timeout=WAIT_MS)  # fmt: skip
    assert tab.shown_path == "/", tab.status.text()
    return tab, container


def item(parent, name: str):
    """The child called `name` of a tree item (or of the tree's top)."""
    for i in range(parent.childCount()):
        if parent.child(i).text(0) == name:
            return parent.child(i)
    raise AssertionError(f"no {name} in {names(parent)}")


def names(parent) -> list[str]:
    return [parent.child(i).text(0) for i in range(parent.childCount())]


def expand(qtbot, tab, folder):
    folder.setExpanded(True)
    qtbot.waitUntil(lambda: not tab.jobs, timeout=WAIT_MS)
    return folder


def top(tab):
    return tab.tree.invisibleRootItem()


def test_folders_expand_one_directory_at_a_time(qtbot, desktop, server):
    tab, container = open_files(qtbot, desktop, server, "mkdir -p /etc/deep/inner",
                                "ln -s hostname /etc/name-link")  # fmt: skip
    etc = expand(qtbot, tab, item(top(tab), "etc"))
    listed = server.docker("exec", container, "ls", "-A", "/etc").stdout.split()
    assert sorted(names(etc)) == sorted(listed)  # its top level only: not deep/inner
    assert names(etc)[0] == "deep"  # folders first
    size = len(server.docker("exec", container, "cat", "/etc/hostname").stdout.encode())
    hostname = item(etc, "hostname")
    assert hostname.text(1) == f"{size}B" and hostname.text(2) == "-rw-r--r--"
    assert hostname.data(0, ENTRY)[0] == "/etc/hostname"
    link = item(etc, "name-link")
    assert link.text(4) == "→ hostname" and link.text(2).startswith("l")
    deep = expand(qtbot, tab, item(etc, "deep"))
    assert names(deep) == ["inner"] and names(expand(qtbot, tab, item(deep, "inner"))) == []
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()


def test_a_big_folders_top_level_is_read_without_its_tree(qtbot, desktop, server):
    tab, container = open_files(qtbot, desktop, server, "mkdir -p /data/tree/a /data/tree/b",
                                "dd if=/dev/zero of=/data/tree/a/huge bs=1M count=64",
                                "echo hi > /data/small")  # fmt: skip
    before = helpers_of(server)
    tab.path_bar.setText("/data/")
    tab.path_bar.returnPressed.emit()
    qtbot.waitUntil(lambda: tab.shown_path == "/data" or "Cannot" in tab.status.text(),
                    timeout=WAIT_MS)  # fmt: skip
    assert tab.shown_path == "/data", tab.status.text()
    assert names(top(tab)) == ["tree", "small"]
    assert tab.last_listing.bytes_read < 1 << 20  # of a tar over 64 MiB: the top level only
    until(lambda: helpers_of(server) == before, "the engine's archive helper to be reaped")
    ok(server.docker("stop", "-t", "0", container))  # the container's lock was let go
    qtbot.waitUntil(lambda: EXITED in tab.status.text(), timeout=WAIT_MS)
    assert names(top(tab)) == ["tree", "small"]  # the same top, read again as it left it


def test_download_a_file_byte_for_byte(qtbot, desktop, server, tmp_path):
    tab, container = open_files(qtbot, desktop, server)
    saved = tmp_path / "out" / "hostname.txt"
    saved.parent.mkdir()
    tab.ask_save = lambda parent, name: str(saved) if name == "hostname" else ""
    etc = expand(qtbot, tab, item(top(tab), "etc"))
    tab.tree.setCurrentItem(item(etc, "hostname"))
    assert tab.download_button.isEnabled()
    qtbot.mouseClick(tab.download_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: tab.status.text().startswith("Saved"), timeout=WAIT_MS)
    inside = server.docker("exec", container, "cat", "/etc/hostname").stdout.encode()
    assert saved.read_bytes() == inside and inside.strip()
    assert [p.name for p in saved.parent.iterdir()] == ["hostname.txt"]  # no temporary left
    tab.tree.setCurrentItem(etc)
    assert not tab.download_button.isEnabled()  # a folder is not downloaded


@pytest.fixture
def small_folder(tmp_path):
    """A 1 MiB tmpfs: where a bigger file does not fit (unmounted after the test)."""
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_file_too_large_for_where_it_is_saved(qtbot, desktop, server, small_folder):
    tab, _container = open_files(qtbot, desktop, server,
                                 "dd if=/dev/zero of=/big bs=1M count=2")  # fmt: skip
    tab.ask_save = lambda parent, name: str(small_folder / name)
    tab.tree.setCurrentItem(item(top(tab), "big"))
    tab.download()
    bar = desktop.window.errors
    qtbot.waitUntil(lambda: bar.isVisible(), timeout=WAIT_MS)
    assert bar.text.text().startswith("Could not download /big: big is 2.1MB but only ")
    assert bar.text.text().endswith(f"is free in {small_folder}: free some space there or "
                                    "save it elsewhere.")  # fmt: skip
    assert tab.status.text().startswith("Cannot download /big: big is 2.1MB")
    assert list(small_folder.iterdir()) == []  # nothing half-written
    expand(qtbot, tab, item(top(tab), "etc"))  # the tab keeps working
    assert "hostname" in names(item(top(tab), "etc"))


def test_a_path_that_vanished(qtbot, desktop, server):
    tab, container = open_files(qtbot, desktop, server, "mkdir -p /doomed/inner")
    doomed = item(top(tab), "doomed")
    ok(server.docker("exec", container, "rm", "-r", "/doomed"))
    doomed.setExpanded(True)
    bar = desktop.window.errors
    qtbot.waitUntil(lambda: bar.isVisible(), timeout=WAIT_MS)
    words = "/doomed is not in the container (any more): it was removed or renamed."
    assert bar.text.text() == f"Could not list /doomed in the container: {words}"
    assert doomed.child(0).text(0) == f"Cannot read it: {words}" and not doomed.isExpanded()
    tab.path_bar.setText("/nope")
    tab.path_bar.returnPressed.emit()
    qtbot.waitUntil(lambda: "/nope" in bar.text.text(), timeout=WAIT_MS)
    assert tab.status.text().startswith("Cannot read /nope: /nope is not in the container")
    assert names(top(tab)) == [] and not tab.download_button.isEnabled()
    tab.up_button.click()  # the tab keeps working
    qtbot.waitUntil(lambda: tab.shown_path == "/", timeout=WAIT_MS)
    assert "etc" in names(top(tab)) and "doomed" not in names(top(tab))


def test_a_container_that_exits_keeps_its_files(qtbot, desktop, server):
    tab, container = open_files(qtbot, desktop, server)
    ok(server.docker("kill", container))
    qtbot.waitUntil(lambda: EXITED in tab.status.text(), timeout=WAIT_MS)
    assert "hostname" in names(expand(qtbot, tab, item(top(tab), "etc")))
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()


def test_a_container_removed_while_the_tab_is_open(qtbot, desktop, server):
    tab, container = open_files(qtbot, desktop, server)
    ok(server.docker("rm", "-f", container))
    qtbot.waitUntil(lambda: "was removed" in tab.status.text(), timeout=WAIT_MS)
    assert names(top(tab)) == [] and not tab.download_button.isEnabled() and not tab.jobs
    assert not tab.isEnabled() and desktop.window.errors.isHidden()


def test_a_symlink_opens_where_it_points(qtbot, desktop, server):
    tab, _container = open_files(qtbot, desktop, server, "ln -s /etc /etc-link",
                                 "ln -s /etc/hostname /name-link")  # fmt: skip
    tab._activated(item(top(tab), "etc-link"))
    qtbot.waitUntil(lambda: tab.shown_path == "/etc-link", timeout=WAIT_MS)
    assert "hostname" in names(top(tab)) and tab.path_bar.text() == "/etc-link"
    tab.up_button.click()
    qtbot.waitUntil(lambda: tab.shown_path == "/", timeout=WAIT_MS)
    tab._activated(item(top(tab), "name-link"))
    bar = desktop.window.errors
    qtbot.waitUntil(lambda: bar.isVisible(), timeout=WAIT_MS)
    assert bar.text.text() == ("Could not list /name-link in the container: /name-link is not a "
                               "folder (a symlink to a file?): only a folder opens.")  # fmt: skip
    tab.up_button.click()  # the tab keeps working
    qtbot.waitUntil(lambda: tab.shown_path == "/", timeout=WAIT_MS)


def test_a_download_goes_on_when_the_tab_is_read_again(qtbot, desktop, server, tmp_path):
    """As when its container stops meanwhile: the pane reads the tab again; the download the
    user asked for is not cancelled with the tab's reads."""
    tab, container = open_files(qtbot, desktop, server,
                                "dd if=/dev/urandom of=/blob bs=1M count=32")  # fmt: skip
    saved = tmp_path / "out" / "blob"
    saved.parent.mkdir()
    tab.ask_save = lambda parent, name: str(saved)
    tab.tree.setCurrentItem(item(top(tab), "blob"))
    tab.download()
    tab.show_container(container, running=False)  # what the pane does when it stops
    qtbot.waitUntil(lambda: tab.status.text().startswith("Saved /blob"), timeout=WAIT_MS)
    inside = ok(server.docker("exec", container, "md5sum", "/blob")).split()[0]
    assert hashlib.md5(saved.read_bytes()).hexdigest() == inside
    assert [p.name for p in saved.parent.iterdir()] == ["blob"]  # no temporary left
