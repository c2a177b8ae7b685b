"""The Volumes, Networks and Images views with an engine that is slow or gone (a fake engine
injected, offscreen): every call runs in a worker, the window stays live while one hangs, and
each failure is said once in the window's one error bar. (What they show of a real engine:
test_gui_volumes_live, test_gui_network_live, test_gui_images_live.)"""

from __future__ import annotations

import threading

import pytest
import requests
from guikit import FakeEngine
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from vmctl_gui.app import Desktop
from vmctl_gui.engine import BuildRequest, ImageRow

WAIT_MS = 60_000
GONE = "The engine does not answer. Start the VM (Engine tab, or the tray's Start), then try again."


@pytest.fixture
def desktop(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path / "vmctl"))
    engine = FakeEngine(state="running")
    engine.image_rows = [ImageRow("sha256:" + "e" * 64, "busybox", "latest", 4_400_000, 0)]
    desktop = Desktop(engine, tray=False, poll_ms=100,
                      ask=lambda title, text: QMessageBox.StandardButton.Yes)  # fmt: skip
    qtbot.addWidget(desktop.window)
    desktop.begin()
    qtbot.waitUntil(lambda: desktop.window.images_view.model.rowCount() == 1, timeout=WAIT_MS)
    yield desktop
    engine.gate.set()
    engine.event_stream.close()
    desktop.bridge.shutdown()


def off_ui_thread(engine: FakeEngine) -> None:
    ui = threading.main_thread().name
    assert all(thread != ui for _call, thread in engine.calls), engine.calls


def gone() -> Exception:
    return requests.exceptions.ConnectionError("refused")


def test_an_engine_gone_is_said_in_the_error_bar_for_each_new_call(qtbot, desktop):
    engine, window = desktop.bridge.engine, desktop.window
    for call, act, what in (
        ("volumes", desktop.bridge.refresh_lists, "list volumes"),
        ("networks", desktop.bridge.refresh_lists, "list networks"),
        ("prune_images True", lambda: (window.images_view.every.setChecked(True),
                                       window.images_view.prune()), "prune the images"),
    ):  # fmt: skip
        engine.errors[call] = gone()
        act()
        qtbot.waitUntil(lambda w=what: window.errors.text.text() == f"Could not {w}: {GONE}",
                        timeout=WAIT_MS)  # fmt: skip
    off_ui_thread(engine)


def test_a_slow_history_leaves_the_window_live(qtbot, desktop):
    engine, view = desktop.bridge.engine, desktop.window.images_view
    engine.gate.clear()  # the engine holds the history read
    view.table.selectRow(0)
    history = view.history()
    assert history.summary.text() == "Reading the history of busybox:latest…"
    qtbot.waitUntil(lambda: "history busybox:latest" in [c for c, _t in engine.calls],
                    timeout=WAIT_MS)  # fmt: skip
    view.ref.setText("alpine")  # the window answers meanwhile
    qtbot.mouseClick(view.pull_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Pulled alpine" in view.panel.summary.text(), timeout=WAIT_MS)
    assert history.model.rowCount() == 0
    engine.gate.set()
    qtbot.waitUntil(lambda: history.model.rowCount() == 2, timeout=WAIT_MS)
    assert history.summary.text() == "2 steps, 1 of them with content: 4.4MB."
    off_ui_thread(engine)


def test_closing_a_build_window_cancels_its_stream(qtbot, desktop, tmp_path):
    engine = desktop.bridge.engine
    window = desktop.window.images_view.build(BuildRequest(str(tmp_path), tags=("app:1",)))
    qtbot.waitUntil(lambda: "Step 1/2" in window.output.toPlainText(), timeout=WAIT_MS)
    stream = engine.streams[-1]
    window.close()
    assert stream.closed.is_set()
    assert desktop.window.errors.isHidden()
    off_ui_thread(engine)


def test_a_push_that_fails_is_said_and_push_is_offered_again(qtbot, desktop):
    engine, view = desktop.bridge.engine, desktop.window.images_view
    engine.errors["push busybox:latest"] = gone()
    view.table.selectRow(0)
    qtbot.mouseClick(view.push_button, Qt.MouseButton.LeftButton)
    assert not view.push_button.isEnabled()
    qtbot.waitUntil(view.push_button.isEnabled, timeout=WAIT_MS)
    assert view.panel.summary.text() == "Pushing busybox:latest failed: see the message above"
    assert desktop.window.errors.text.text() == f"Could not push busybox:latest: {GONE}"


def test_a_job_still_running_when_the_app_quits_ends_quietly(qtbot):
    """Its relay (a QObject of the UI thread) deleted at exit: the outcome is dropped, not
    raised out of the pool's thread ("Signal source has been deleted")."""
    import shiboken6
    from vmctl_gui.jobs import Job

    said: list[object] = []
    job = Job(lambda job: job.progress("late") or 1 / 0, on_error=said.append,
              on_progress=said.append)  # fmt: skip
    shiboken6.delete(job._relay)
    job.run()  # as the pool runs it
    assert said == []
