"""The Volumes tab against the real engine (`vmctl-agent serve` on this host): sizes as the
engine measures them, the containers using each, create, remove (refused in the engine's words
while in use, nothing lost), and prune only after the user agrees."""

from __future__ import annotations

import os

import pytest
from agentserver import ok, serving
from guikit import AgentOnHost
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from vmctl_gui.app import Desktop

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")
WAIT_MS = 60_000
YES, NO = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No


@pytest.fixture(scope="module")
def server(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-volumes"), registry) as server:
        yield server


@pytest.fixture
def desktop(qtbot, server, tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path))
    answers = [NO]
    desktop = Desktop(AgentOnHost("gui", docker_host=server.url), tray=False,
                      ask=lambda title, text: answers[-1])  # fmt: skip
    desktop.answers = answers
    qtbot.addWidget(desktop.window)
    desktop.begin()
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "running", timeout=WAIT_MS)
    yield desktop
    desktop.bridge.shutdown()
    for container in server.docker("ps", "-aq").stdout.split():
        server.docker("rm", "-f", container)
    server.docker("volume", "prune", "-af")


def volumes(server) -> list[str]:
    return sorted(ok(server.docker("volume", "ls", "-q")).split())


def row(view, name: str):
    found = view.model.row_of(name)
    return view.model.rows[found] if found >= 0 else None


def test_volumes_show_size_and_users_and_create_remove(qtbot, desktop, server):
    view = desktop.window.volumes_view
    view.name.setText("pages")
    qtbot.mouseClick(view.create_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: row(view, "pages") is not None, timeout=WAIT_MS)
    assert view.note.text() == "Created volume pages."
    assert volumes(server) == ["pages"]
    ok(server.docker("run", "--rm", "-v", "pages:/data", "busybox", "dd", "if=/dev/zero",
                     "of=/data/f", "bs=1024", "count=100"))  # fmt: skip
    ok(server.docker("run", "-d", "--name", "reader", "-v", "pages:/data", "busybox", "sleep",
                     "60"))  # fmt: skip
    qtbot.waitUntil(lambda: row(view, "pages").containers == ("reader",), timeout=WAIT_MS)
    assert row(view, "pages").size >= 100 * 1024
    shown = view.model.data(view.model.index(view.model.row_of("pages"), 1))
    assert shown.endswith("kB") and float(shown[:-2]) >= 102
    view.table.selectRow(view.model.row_of("pages"))
    qtbot.mouseClick(view.remove_button, Qt.MouseButton.LeftButton)
    errors = desktop.window.errors
    qtbot.waitUntil(lambda: not errors.isHidden(), timeout=WAIT_MS)
    assert errors.text.text().startswith(
        "Could not remove the volume pages: remove pages: volume is in use - ["
    )
    assert volumes(server) == ["pages"]  # nothing lost
    ok(server.docker("rm", "-f", "reader"))
    qtbot.waitUntil(lambda: row(view, "pages").containers == (), timeout=WAIT_MS)
    view.table.selectRow(view.model.row_of("pages"))
    qtbot.mouseClick(view.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.model.rowCount() == 0, timeout=WAIT_MS)
    assert view.note.text() == "Removed volume pages." and volumes(server) == []


def test_prune_asks_first_then_takes_the_unused_anonymous_ones_or_every_unused_one(
    qtbot, desktop, server
):
    ok(server.docker("run", "--name", "scratch", "-v", "/scratch", "busybox", "true"))
    ok(server.docker("rm", "scratch"))  # its anonymous volume stays, unused
    anonymous = volumes(server)
    ok(server.docker("volume", "create", "spare"))
    ok(server.docker("run", "-d", "--name", "keeper", "-v", "kept:/data", "busybox", "sleep",
                     "60"))  # fmt: skip
    view = desktop.window.volumes_view
    qtbot.waitUntil(lambda: view.model.rowCount() == 3, timeout=WAIT_MS)
    assert [r.name for r in view.model.rows][-1] == anonymous[0]  # the anonymous ones last
    qtbot.mouseClick(view.prune_button, Qt.MouseButton.LeftButton)  # the user says No
    assert volumes(server) == sorted([*anonymous, "kept", "spare"])
    desktop.answers.append(YES)
    qtbot.mouseClick(view.prune_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.note.text().startswith("Pruned"), timeout=WAIT_MS)
    assert view.note.text() == f"Pruned {anonymous[0]}: 0B reclaimed."
    assert volumes(server) == ["kept", "spare"]
    view.every.setChecked(True)
    qtbot.mouseClick(view.prune_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.note.text() == "Pruned spare: 0B reclaimed.", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: [r.name for r in view.model.rows] == ["kept"], timeout=WAIT_MS)
    assert volumes(server) == ["kept"]
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()
