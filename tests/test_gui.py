"""The desktop app with a fake engine injected (pytest-qt, offscreen): state changes, progress,
errors, the lists, quick run, the tray menu and quitting. Nothing may run on the UI thread."""

from __future__ import annotations

import dataclasses
import threading

import docker.errors
import pytest
from guikit import FakeEngine
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from vmctl_gui import prefs
from vmctl_gui.app import Desktop
from vmctl_gui.engine import ContainerRow, RunRequest

WAIT_MS = 60_000  # a hang guard: every wait polls its condition and returns once it holds


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path / "vmctl"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


@pytest.fixture
def make_desktop(qtbot, home):
    made: list[Desktop] = []

    def make(engine: FakeEngine | None = None, **kw) -> Desktop:
        kw.setdefault("ask", lambda title, text: QMessageBox.StandardButton.No)
        desktop = Desktop(engine or FakeEngine(), tray=False, poll_ms=100, **kw)
        qtbot.addWidget(desktop.window)
        desktop.begin()
        made.append(desktop)
        return desktop

    yield make
    for desktop in made:
        desktop.bridge.engine.gate.set()
        desktop.bridge.engine.event_stream.close()
        desktop.bridge.shutdown()


def running(qtbot, desktop: Desktop) -> Desktop:
    desktop.bridge.start_vm()
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "running", timeout=WAIT_MS)
    return desktop


def off_ui_thread(engine: FakeEngine) -> None:
    ui = threading.main_thread().name
    assert engine.calls, "the engine was never called"
    assert all(thread != ui for _call, thread in engine.calls), engine.calls


def test_start_shows_each_stage_then_running_with_docker_version(qtbot, make_desktop):
    engine = FakeEngine()
    engine.gate.clear()  # hold the start at its ssh stage
    desktop = make_desktop(engine)
    view = desktop.window.engine_view
    qtbot.waitUntil(lambda: "Stopped" in view.state_label.text(), timeout=WAIT_MS)
    assert view.start_button.isEnabled()

    qtbot.mouseClick(view.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Starting: ssh" in view.state_label.text(), timeout=WAIT_MS)
    assert not view.start_button.isEnabled()
    assert "[hypervisor]" in view.progress.toPlainText()

    engine.gate.set()
    qtbot.waitUntil(lambda: "Running" in view.state_label.text(), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: view.version_grid.count() > 0, timeout=WAIT_MS)
    server = view.findChild(type(view.state_label), "OS/Arch-2")
    assert server.text() == "linux/amd64"
    assert "[engine]" in view.progress.toPlainText()
    assert "DOCKER_HOST=unix:///fake" in view.detail_label.text()
    qtbot.waitUntil(lambda: view.disk.rowCount() == 4, timeout=WAIT_MS)
    disk = {
        view.disk.itemAt(row, view.disk.ItemRole.LabelRole).widget().text(): view.disk.itemAt(
            row, view.disk.ItemRole.FieldRole
        )
        .widget()
        .text()
        for row in range(view.disk.rowCount())
    }
    assert disk == {
        "Disk image on this computer": "1.5GB",
        "Can grow to": "20 GiB",
        "Images": "12MB",
        "Containers": "4.1kB",
    }
    off_ui_thread(engine)


def test_failed_start_names_the_stage_and_shows_the_console(qtbot, make_desktop):
    engine = FakeEngine()
    engine.fail_stage = "ssh"
    desktop = make_desktop(engine)
    view = desktop.window.engine_view
    desktop.bridge.start_vm()
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "error", timeout=WAIT_MS)
    assert "Failed to start" in view.state_label.text()
    assert "Stage 'ssh' failed: the guest's sshd did not answer" in view.detail_label.text()
    assert "Kernel panic - not syncing: fake" in view.progress.toPlainText()
    errors = desktop.window.errors
    assert not errors.isHidden()
    assert "Could not start the VM: It failed at stage 'ssh'" in errors.text.text()
    # The poll re-derives "stopped" from the fake, but the failure stays until the next start.
    qtbot.wait(300)
    assert desktop.bridge.state.state == "error"
    assert view.start_button.isEnabled()
    engine.fail_stage = None
    running(qtbot, desktop)


def test_stop_cancels_a_start_that_is_still_waiting(qtbot, make_desktop):
    engine = FakeEngine()
    engine.gate.clear()
    desktop = make_desktop(engine)
    start = desktop.bridge.start_vm()
    qtbot.waitUntil(lambda: desktop.bridge.state.detail == "ssh", timeout=WAIT_MS)
    desktop.bridge.stop_vm()
    qtbot.waitUntil(lambda: not desktop.bridge.busy, timeout=WAIT_MS)
    assert start.cancelled and start.finished.is_set()
    assert desktop.bridge.state.state == "stopped"
    # powered off at once (the start was waiting), then once more after the start gave up
    assert [c for c, _ in engine.calls if c in ("start", "stop")] == ["start", "stop", "stop"]
    assert engine.graces == [5.0, 60]  # a booting guest ignores ACPI: no minute's wait
    assert desktop.window.errors.isHidden()  # a cancel is not an error


def test_container_list_follows_the_event_stream_and_actions_reach_the_engine(qtbot, make_desktop):
    engine = FakeEngine()
    desktop = running(qtbot, make_desktop(engine))
    view = desktop.window.containers_view
    qtbot.waitUntil(lambda: any(c == "events" for c, _ in engine.calls), timeout=WAIT_MS)
    assert view.model.rowCount() == 0
    engine.container_rows = [
        ContainerRow("c1" * 32, "web", "busybox", "httpd -f", "running", "Up 2 seconds", 0, ""),
    ]
    engine.event_stream.put({"Type": "container", "Action": "start", "id": "c1" * 32})
    qtbot.waitUntil(lambda: view.model.rowCount() == 1, timeout=WAIT_MS)
    assert view.model.data(view.model.index(0, 0)) == "web"
    assert view.model.data(view.model.index(0, 3)) == "Up 2 seconds"
    view.table.selectRow(0)
    assert view.buttons["stop"].isEnabled() and not view.buttons["start"].isEnabled()
    qtbot.mouseClick(view.buttons["stop"], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: ("stop " + "c1" * 32) in [c for c, _ in engine.calls], timeout=WAIT_MS)
    off_ui_thread(engine)


def test_logs_window_follows_and_closing_it_closes_the_stream(qtbot, make_desktop):
    engine = FakeEngine()
    desktop = running(qtbot, make_desktop(engine))
    engine.container_rows = [ContainerRow("d" * 64, "job", "busybox", "sh", "exited", "", 0, "")]
    desktop.bridge.refresh_lists()
    view = desktop.window.containers_view
    qtbot.waitUntil(lambda: view.model.rowCount() == 1, timeout=WAIT_MS)
    view.table.selectRow(0)
    qtbot.waitUntil(lambda: len(engine.streams) == 1, timeout=WAIT_MS)  # the details' Logs tab
    window = view.show_logs()
    qtbot.waitUntil(lambda: "line two" in window.toPlainText(), timeout=WAIT_MS)
    stream = engine.streams[1]  # the window's own, not the details pane's
    stream.put("line three\n")
    qtbot.waitUntil(lambda: "line three" in window.toPlainText(), timeout=WAIT_MS)
    window.close()
    assert stream.closed.is_set() and not engine.streams[0].closed.is_set()


def test_pull_shows_a_progress_bar_per_layer_and_refreshes_the_list(qtbot, make_desktop):
    engine = FakeEngine()
    desktop = running(qtbot, make_desktop(engine))
    view = desktop.window.images_view
    view.ref.setText("alpine")
    qtbot.mouseClick(view.pull_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Pulled alpine" in view.panel.summary.text(), timeout=WAIT_MS)
    assert sorted(view.panel.bars) == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    for bar in view.panel.bars.values():
        assert bar.value() == bar.maximum() == 200
    qtbot.waitUntil(lambda: view.model.rowCount() == 1, timeout=WAIT_MS)
    assert view.model.data(view.model.index(0, 0)) == "alpine"
    assert view.pull_button.isEnabled()


def test_quick_run_shows_output_and_is_remembered_for_the_tray(qtbot, make_desktop):
    engine = FakeEngine()
    desktop = running(qtbot, make_desktop(engine))
    request = RunRequest("busybox", ("echo", "hi"), ("A=1",))
    window = desktop.repeat(request)
    qtbot.waitUntil(lambda: "hello from busybox" in window.toPlainText(), timeout=WAIT_MS)
    assert "aaaaaaaaaaaa: Pull complete" in window.toPlainText()
    engine.streams[-1].put("[exited with code 0]\n")
    engine.streams[-1].end()
    qtbot.waitUntil(lambda: window.finished, timeout=WAIT_MS)
    assert prefs.load().recent_runs == (request,)
    from vmctl_gui.tray import TrayMenu

    menu = TrayMenu(desktop)
    assert "Run again: busybox echo hi" in menu.actions_text()
    menu.recent[0].trigger()
    qtbot.waitUntil(lambda: len(desktop.run_windows) == 2, timeout=WAIT_MS)
    again = desktop.run_windows[-1]
    qtbot.waitUntil(lambda: "hello from busybox" in again.toPlainText(), timeout=WAIT_MS)
    again.close()
    assert engine.streams[-1].closed.is_set()  # closing the window stops following


def test_engine_errors_appear_in_the_error_bar_in_plain_words(qtbot, make_desktop):
    engine = FakeEngine()
    desktop = running(qtbot, make_desktop(engine))
    response = type("R", (), {"status_code": 409, "reason": "Conflict", "url": "x"})()
    engine.errors["remove abc"] = docker.errors.APIError(
        "409", response, "You cannot remove a running container abc. Stop the container first"
    )
    desktop.bridge.container_action("abc", "remove")
    bar = desktop.window.errors
    qtbot.waitUntil(lambda: not bar.isHidden(), timeout=WAIT_MS)
    assert bar.text.text() == (
        "Could not remove the container: You cannot remove a running container abc. "
        "Stop the container first"
    )
    engine.errors["containers"] = ConnectionRefusedError(111, "Connection refused")
    desktop.bridge.refresh_lists()
    qtbot.waitUntil(lambda: "The engine does not answer" in bar.text.text(), timeout=WAIT_MS)
    assert "Start the VM" in bar.text.text()
    assert len(bar.history) == 2


def test_tray_menu_follows_the_state(qtbot, make_desktop):
    from vmctl_gui.tray import TrayMenu

    desktop = make_desktop()
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "stopped", timeout=WAIT_MS)
    menu = TrayMenu(desktop)
    texts = menu.actions_text()
    assert texts[:2] == ["vmctl default: Stopped", "Start the VM"]
    assert {"Quick run…", "Open terminal", "Open dashboard", "Quit"} <= set(texts)
    assert not menu.terminal.isEnabled()
    running(qtbot, desktop)
    menu.rebuild()
    assert menu.actions_text()[:2] == ["vmctl default: Running", "Stop the VM"]
    assert menu.terminal.isEnabled()


def test_open_terminal_runs_vmctl_ssh_in_a_terminal(qtbot, make_desktop):
    opened: list[list[str]] = []
    desktop = running(qtbot, make_desktop(open_terminal=opened.append))
    desktop.open_terminal()
    desktop.open_shell("abc")
    assert opened == [["vmctl", "ssh", "--name", "default"], ["docker", "exec", "-it", "abc", "sh"]]


@pytest.mark.parametrize(
    ("answer", "stops", "quits"),
    [
        (QMessageBox.StandardButton.Cancel, False, False),
        (QMessageBox.StandardButton.No, False, True),
        (QMessageBox.StandardButton.Yes, True, True),
    ],
)
def test_quit_asks_whether_to_stop_the_vm(qtbot, make_desktop, answer, stops, quits):
    asked: list[str] = []

    def ask(title: str, text: str):
        asked.append(text)
        return answer

    engine = FakeEngine()
    desktop = running(qtbot, make_desktop(engine, ask=ask))
    desktop.quit()
    assert "is running. Stop it too?" in asked[0]
    if stops:
        qtbot.waitUntil(lambda: "stop" in [c for c, _ in engine.calls], timeout=WAIT_MS)
    qtbot.waitUntil(lambda: desktop.quitting == quits, timeout=WAIT_MS)
    assert ("stop" in [c for c, _ in engine.calls]) == stops


def test_quit_does_not_ask_when_the_vm_is_stopped(qtbot, make_desktop):
    asked: list[str] = []
    desktop = make_desktop(ask=lambda title, text: asked.append(text))
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "stopped", timeout=WAIT_MS)
    desktop.quit()
    assert asked == [] and desktop.quitting


def test_settings_are_validated_by_vmctl_and_saved_through_a_worker(qtbot, make_desktop, home):
    engine = FakeEngine()
    desktop = make_desktop(engine)
    view = desktop.window.settings_view
    view.mirrors.setPlainText("ftp://mirror.example")
    view.save()
    assert view.note.text().startswith("Not saved: invalid registry mirror 'ftp://mirror.example'")
    assert engine.saved == []
    view.mirrors.setPlainText("http://10.0.2.2:5000\n\n")
    view.cpus.setValue(1)
    view.memory.setValue(1536)
    view.minimized.setChecked(True)
    view.at_login.setChecked(True)
    view.save()
    qtbot.waitUntil(lambda: view.note.text() == "Saved.", timeout=WAIT_MS)
    assert engine.saved[-1].registry_mirrors == ("http://10.0.2.2:5000",)
    assert engine.saved[-1].memory_mib == 1536
    assert prefs.load().start_minimized
    assert desktop.starts_at_login()
    entry = (home / "config" / "autostart" / "vmctl.desktop").read_text()
    assert "gui --name default --start-vm\n" in entry
    view.at_login.setChecked(False)
    view.save()
    qtbot.waitUntil(lambda: len(engine.saved) == 2, timeout=WAIT_MS)
    assert not desktop.starts_at_login()
    off_ui_thread(engine)


def test_the_login_item_boots_the_vm_once_its_state_is_known(qtbot, home):
    engine = FakeEngine()
    no = QMessageBox.StandardButton.No
    desktop = Desktop(engine, tray=False, poll_ms=100, ask=lambda title, text: no)
    qtbot.addWidget(desktop.window)
    desktop.begin(start_vm=True)
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "running", timeout=WAIT_MS)
    qtbot.wait(300)  # later polls do not start it again
    assert [c for c, _ in engine.calls].count("start") == 1
    desktop.bridge.shutdown()


def test_a_state_read_that_fails_says_so_and_the_next_poll_recovers(qtbot, make_desktop):
    engine = FakeEngine()
    engine.errors["state"] = OSError("libvirtd is not running: scripts/services.sh starts it")
    desktop = make_desktop(engine)
    qtbot.waitUntil(lambda: "libvirtd is not running" in desktop.bridge.state.detail)
    assert desktop.bridge.state.state == "unknown"
    assert "Could not read the VM's state: libvirtd" in desktop.window.errors.text.text()
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "stopped", timeout=WAIT_MS)
    assert dataclasses.asdict(desktop.bridge.state)["detail"] == ""


def test_tray_open_ports_lists_only_running_containers_ports(qtbot, make_desktop):
    from vmctl_gui.engine import PublishedPort
    from vmctl_gui.tray import TrayMenu

    engine = FakeEngine()
    desktop = running(qtbot, make_desktop(engine))
    menu = TrayMenu(desktop)
    assert menu.ports_menu.title() == "Open ports (none published)"
    assert not menu.ports_menu.isEnabled()
    web = PublishedPort("0.0.0.0", 8080, 80)
    engine.container_rows = [
        ContainerRow("a" * 64, "web", "nginx", "", "running", "Up", 0, "", published=(web,)),
        ContainerRow("b" * 64, "old", "nginx", "", "exited", "", 0, "", published=(web,)),
    ]
    desktop.bridge.refresh_lists()
    qtbot.waitUntil(lambda: bool(desktop.ports.ports), timeout=WAIT_MS)
    menu.rebuild()
    assert [a.text() for a in menu.ports_menu.actions()] == ["web: http://localhost:8080"]
    assert menu.ports_menu.isEnabled() and menu.ports_menu.title() == "Open ports"
