"""The Settings tab against vmctl's real config file: the published-ports address and the
resources validated in vmctl's words and saved to vm.json (what the form does not show kept),
and a change saved while the VM runs said to wait for a restart, which is offered.

The VM itself is not booted here: `state`, `start` and `stop` are recorded (a real restart is
test_vmctl_e2e's); the config is vmctl's own, read and written through `vmctl.config`."""

from __future__ import annotations

import dataclasses
import pathlib
import threading

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from vmctl_gui.app import Desktop
from vmctl_gui.engine import VmState
from vmctl_gui.settings_view import restart_needed
from vmctl_gui.vmctl_engine import VmctlEngine

from vmctl import config as vmconfig
from vmctl import paths as vmpaths

WAIT_MS = 60_000


class RecordedVm(VmctlEngine):
    """vmctl's config, a VM whose lifecycle is only recorded (with the thread it ran on)."""

    def __init__(self) -> None:
        super().__init__("gui")
        self.calls: list[tuple[str, str]] = []
        self.running = True

    def state(self) -> VmState:
        return VmState(self.name, "running" if self.running else "stopped", config=self.config())

    def stop(self, say, grace: float = 60) -> VmState:
        self.calls.append(("stop", threading.current_thread().name))
        self.running = False
        return self.state()

    def start(self, say, cancelled) -> VmState:
        self.calls.append(("start", threading.current_thread().name))
        self.running = True
        return self.state()


@pytest.fixture
def desktop(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path / "vmctl"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    stored = vmconfig.VMConfig(cpus=1, memory_mib=1024, insecure_registries=("10.0.2.2:5000",))
    path = vmpaths.vm("gui").config
    path.parent.mkdir(parents=True)
    vmconfig.save(stored, path)
    engine = RecordedVm()
    desktop = Desktop(engine, tray=False, poll_ms=100,
                      ask=lambda title, text: QMessageBox.StandardButton.No)  # fmt: skip
    qtbot.addWidget(desktop.window)
    desktop.begin()
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "running", timeout=WAIT_MS)
    yield desktop
    desktop.bridge.shutdown()


def stored() -> vmconfig.VMConfig:
    return vmconfig.load(vmpaths.vm("gui").config)


def test_a_bad_publish_address_is_refused_in_vmctls_words_and_nothing_is_written(desktop):
    view = desktop.window.settings_view
    assert view.publish.text() == "127.0.0.1"
    before = vmpaths.vm("gui").config.read_text()
    view.publish.setText("localhost")
    view.save()
    assert view.note.text() == (
        "Not saved: publish address 'localhost' is not an IP address (e.g. 127.0.0.1, or "
        "0.0.0.0 to publish ports to the network)"
    )
    assert vmpaths.vm("gui").config.read_text() == before
    assert view.restart_button.isHidden()


def test_a_change_saved_while_the_vm_runs_waits_for_a_restart_that_is_offered(qtbot, desktop):
    view = desktop.window.settings_view
    view.publish.setText("0.0.0.0")
    view.memory.setValue(2048)
    view.save()
    qtbot.waitUntil(lambda: view.note.text().startswith("Saved"), timeout=WAIT_MS)
    assert view.note.text() == (
        "Saved. The VM takes the new memory and the published-ports address when it restarts."
    )
    assert stored() == vmconfig.VMConfig(cpus=1, memory_mib=2048, publish_address="0.0.0.0",
                                         insecure_registries=("10.0.2.2:5000",))  # fmt: skip
    assert not view.restart_button.isHidden()
    engine = desktop.bridge.engine
    qtbot.mouseClick(view.restart_button, Qt.MouseButton.LeftButton)
    assert view.restart_button.isHidden()
    qtbot.waitUntil(lambda: [c for c, _t in engine.calls] == ["stop", "start"], timeout=WAIT_MS)
    assert all(thread != threading.main_thread().name for _c, thread in engine.calls)
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "running", timeout=WAIT_MS)
    view.save()  # nothing changed: nothing waits
    qtbot.waitUntil(lambda: view.note.text() == "Saved.", timeout=WAIT_MS)
    assert view.restart_button.isHidden()


def test_a_change_saved_while_the_vm_is_stopped_is_simply_saved(qtbot, desktop):
    desktop.bridge.engine.running = False
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "stopped", timeout=WAIT_MS)
    view = desktop.window.settings_view
    view.memory.setValue(1536)
    view.save()
    qtbot.waitUntil(lambda: view.note.text() == "Saved.", timeout=WAIT_MS)
    assert view.restart_button.isHidden() and stored().memory_mib == 1536


def test_restart_needed_names_each_changed_setting():
    before = vmconfig.VMConfig(cpus=1)
    after = dataclasses.replace(before, disk_gib=40, registry_mirrors=("http://10.0.2.2:5000",))
    assert restart_needed(before, after) == ["disk size", "registry mirrors"]
    assert restart_needed(before, before) == []


def shared(view) -> list[str]:
    box = view.shares.list
    return [box.item(row).text() for row in range(box.count())]


def test_shared_folders_added_made_read_only_removed_and_saved_with_a_restart_offered(
    qtbot, desktop, tmp_path
):
    code, data = tmp_path / "code", tmp_path / "data"
    code.mkdir(), data.mkdir()
    view = desktop.window.settings_view
    assert shared(view) == [] and "your home folder is shared" in view.shares.list.toolTip()
    home = str(pathlib.Path.home())
    note = view.shares.default_note
    assert note.text() == f"None listed: {home} shared by default, as Docker Desktop does."
    assert not note.isHidden()
    for folder in (code, data):
        view.shares.ask = lambda parent, folder=folder: str(folder)
        view.shares.add_button.click()
    assert shared(view) == [str(code), str(data)] and view.shares.read_only.isEnabled()
    assert note.isHidden(), "listed folders replace the default"
    view.shares.read_only.click()  # the folder just added is the one selected
    assert shared(view) == [str(code), f"{data}  (read-only)"]
    view.shares.list.setCurrentRow(0)
    assert not view.shares.read_only.isChecked()
    view.shares.remove_button.click()
    assert shared(view) == [f"{data}  (read-only)"] and view.note.text() == ""
    view.save()
    qtbot.waitUntil(lambda: view.note.text().startswith("Saved"), timeout=WAIT_MS)
    assert view.note.text() == "Saved. The VM takes the new shared folders when it restarts."
    assert stored().mounts == (f"{data}:ro",) and not view.restart_button.isHidden()
    assert [(s.guest, s.read_only) for s in stored().shares()] == [(str(data), True)]


@pytest.mark.parametrize(
    ("folder", "words"),
    [
        ("/etc", "Cannot share /etc: /etc cannot be shared: the VM's own /etc is there, and a "
                 "share at the same path would hide it."),
        ("{tmp}/code/app", "Cannot share {tmp}/code/app: {tmp}/code/app is inside {tmp}/code, "
                           "which is shared too: it is in the VM already (share one of them, or "
                           "one read-only)."),
        ("{tmp}/a-file", "Cannot share {tmp}/a-file: {tmp}/a-file is not a folder: only folders "
                         "can be shared."),
    ],
)  # fmt: skip
def test_a_folder_that_cannot_be_shared_is_said_in_words_and_nothing_changes(
    desktop, tmp_path, folder, words
):
    (tmp_path / "code" / "app").mkdir(parents=True)
    (tmp_path / "a-file").write_text("x")
    view = desktop.window.settings_view
    view.shares.ask = lambda parent: str(tmp_path / "code")
    view.shares.add_button.click()
    before = vmpaths.vm("gui").config.read_text()
    view.shares.ask = lambda parent: folder.format(tmp=tmp_path)
    view.shares.add_button.click()
    assert view.note.text() == words.format(tmp=tmp_path)
    assert shared(view) == [str(tmp_path / "code")]  # the list as it was; the form still works
    view.shares.remove_button.click()
    assert shared(view) == [] and vmpaths.vm("gui").config.read_text() == before
