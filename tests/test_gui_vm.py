"""A new user's flow in the desktop app against a real VM (conftest's shared `user_vm`, started
with `vmctl start` as a user does): the state read from vmctl, a volume and a network made and
removed in the VM's engine, and a quick run whose published port the host agent carries to this
machine's loopback: its "Open in browser" button comes once the port answers, and the page it
opens is served. Everything made is removed: the VM is left as it was found."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest
from netkit import HTTPD
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox
from uservm import ok
from vmctl_gui.app import Desktop
from vmctl_gui.engine import RunRequest
from vmctl_gui.vmctl_engine import VmctlEngine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the VM needs root here (CI is root)"),
]
WAIT_MS = 300_000  # a hang guard: every wait polls its condition under TCG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served(url: str) -> bytes:
    """The page, or b"" while httpd in the container is not listening yet."""
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.read()
    except OSError:
        return b""


def named(view, name: str) -> int:
    """The row of the network called `name` (the list is keyed by id), or -1."""
    return next((i for i, r in enumerate(view.model.rows) if r.name == name), -1)


def answer(title: str, text: str) -> QMessageBox.StandardButton:
    """Yes to the prunes' questions; No to "stop the VM too?" when the window closes at the
    end: the VM is shared with the tests that come after."""
    no = title == "Quit vmctl"
    return QMessageBox.StandardButton.No if no else QMessageBox.StandardButton.Yes


@pytest.fixture
def desktop(qtbot, user_vm, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(user_vm.home))
    opened: list[str] = []
    desktop = Desktop(VmctlEngine(user_vm.name), tray=False, open_url=opened.append,
                      ask=answer)  # fmt: skip
    desktop.opened = opened
    qtbot.addWidget(desktop.window)
    desktop.begin()
    yield desktop
    desktop.bridge.shutdown()
    (user_vm.home / "desktop.json").unlink(missing_ok=True)  # the app's preferences


def test_a_new_users_flow_with_volumes_networks_and_a_port_opened(qtbot, desktop, user_vm):
    window = desktop.window
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "running", timeout=WAIT_MS)
    volumes, networks = window.volumes_view, window.networks_view
    qtbot.waitUntil(lambda: named(networks, "bridge") >= 0, timeout=WAIT_MS)
    bridge = networks.model.rows[named(networks, "bridge")]
    assert (bridge.subnet, bridge.gateway) == ("172.17.0.0/16", "172.17.0.1")

    volumes.name.setText("gui-vm-data")
    qtbot.mouseClick(volumes.create_button, Qt.MouseButton.LeftButton)
    networks.name.setText("gui-vm-net")
    qtbot.mouseClick(networks.create_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: volumes.model.row_of("gui-vm-data") >= 0, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: named(networks, "gui-vm-net") >= 0, timeout=WAIT_MS)
    assert "gui-vm-net" in ok(user_vm.docker("network", "ls", "--format", "{{.Name}}"))

    port = free_port()
    run = desktop.repeat(RunRequest("busybox", ("sh", "-c", HTTPD), ports=(f"{port}:80",)))
    url = f"http://localhost:{port}"
    button = run.links[url]
    qtbot.waitUntil(button.isEnabled, timeout=WAIT_MS)  # the host agent listens for it
    qtbot.waitUntil(lambda: served(url) == b"hello\n", timeout=WAIT_MS)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert desktop.opened == [url]
    run.close()
    qtbot.waitUntil(lambda: ok(user_vm.docker("ps", "-aq")) == "", timeout=WAIT_MS)

    volumes.table.selectRow(volumes.model.row_of("gui-vm-data"))
    qtbot.mouseClick(volumes.remove_button, Qt.MouseButton.LeftButton)
    networks.table.selectRow(named(networks, "gui-vm-net"))
    qtbot.mouseClick(networks.remove_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: volumes.model.row_of("gui-vm-data") < 0, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: named(networks, "gui-vm-net") < 0, timeout=WAIT_MS)
    assert ok(user_vm.docker("volume", "ls", "-q")) == ""
    assert "gui-vm-net" not in ok(user_vm.docker("network", "ls", "--format", "{{.Name}}"))
    window.close()  # as the user quits: the VM, shared with later tests, keeps running
    assert ok(user_vm.vmctl("status")).startswith(f"{user_vm.name}: running")
    assert window.errors.isHidden(), window.errors.text.text()
