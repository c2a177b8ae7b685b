"""The desktop app against the real engine (`vmctl-agent serve` on this host, a loopback registry
as its mirror): docker version, the live container list, pull with per-layer progress, quick
run output, logs, and a quick run closed mid-way leaving no container behind.

The VM half is not under test here (test_vmctl_e2e boots real VMs): the engine's `state()`
reports running, and everything else goes through VmctlEngine's docker-py calls unchanged.
"""

from __future__ import annotations

import os

import pytest
from agentserver import serving
from guikit import AgentOnHost
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMessageBox
from vmctl_gui.app import Desktop
from vmctl_gui.engine import RunRequest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)"),
]
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-gui"), registry) as server:
        yield server


@pytest.fixture
def desktop(qtbot, server, tmp_path, monkeypatch):
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path))
    desktop = Desktop(
        AgentOnHost("gui", docker_host=server.url),
        tray=False,
        ask=lambda title, text: QMessageBox.StandardButton.No,
    )
    qtbot.addWidget(desktop.window)
    desktop.begin()
    qtbot.waitUntil(lambda: desktop.bridge.state.state == "running", timeout=WAIT_MS)
    yield desktop
    desktop.bridge.shutdown()


def containers(server) -> list[str]:
    return server.docker("ps", "-aq").stdout.split()


def test_docker_version_panel_shows_the_engine_is_linux_amd64(qtbot, desktop):
    view = desktop.window.engine_view
    qtbot.waitUntil(lambda: view.findChild(QLabel, "OS/Arch-2") is not None, timeout=WAIT_MS)
    assert view.findChild(QLabel, "OS/Arch-2").text() == "linux/amd64"
    assert view.findChild(QLabel, "Kernel-2").text() == os.uname().release
    assert view.findChild(QLabel, "API version-1").text() != "—"


def test_pull_shows_real_per_layer_progress_then_lists_the_image(qtbot, desktop):
    view = desktop.window.images_view
    view.ref.setText("busybox")
    qtbot.mouseClick(view.pull_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Pulled busybox" in view.panel.summary.text(), timeout=WAIT_MS)
    assert view.panel.bars, "no layer progress arrived"
    for bar in view.panel.bars.values():
        assert bar.maximum() > 0 and bar.value() == bar.maximum()
    qtbot.waitUntil(
        lambda: any(r.repository == "busybox" for r in view.model.rows), timeout=WAIT_MS
    )


def test_quick_run_pulls_if_needed_and_shows_the_output_and_exit_code(qtbot, desktop, server):
    request = RunRequest(
        "busybox",
        ("sh", "-c", "echo hello from the engine; echo to stderr >&2; exit 3"),
        ("GREETING=hi",),
    )
    window = desktop.repeat(request)
    qtbot.waitUntil(lambda: window.finished, timeout=WAIT_MS)
    text = window.toPlainText()
    assert "hello from the engine\n" in text
    assert "to stderr\n" in text
    assert text.endswith("[exited with code 3]\n")
    qtbot.waitUntil(lambda: containers(server) == [], timeout=WAIT_MS)  # removed after


def test_quick_run_of_an_image_not_pulled_yet_pulls_it_first(qtbot, desktop, server):
    server.docker("rmi", "-f", "hello-world")
    window = desktop.repeat(RunRequest("hello-world"))
    qtbot.waitUntil(lambda: window.finished, timeout=WAIT_MS)
    text = window.toPlainText()
    assert "Pull complete" in text or "Download complete" in text
    assert text.index("Hello from Docker!") > text.index("Pull")


def test_closing_a_quick_run_mid_way_removes_its_container(qtbot, desktop, server):
    window = desktop.repeat(
        RunRequest("busybox", ("sh", "-c", "while :; do echo tick; sleep 0.2; done"))
    )
    qtbot.waitUntil(lambda: "tick" in window.toPlainText(), timeout=WAIT_MS)
    assert len(containers(server)) == 1
    window.close()
    qtbot.waitUntil(lambda: containers(server) == [], timeout=WAIT_MS)


def test_container_list_follows_the_engine_and_the_buttons_act(qtbot, desktop, server):
    view = desktop.window.containers_view
    started = server.docker("run", "-d", "--name", "gui-live", "busybox", "sh", "-c",
                            "echo started; sleep 60")  # fmt: skip
    assert started.returncode == 0, started.stderr
    qtbot.waitUntil(
        lambda: [(r.name, r.state) for r in view.model.rows] == [("gui-live", "running")],
        timeout=WAIT_MS,
    )
    view.table.selectRow(0)
    logs = view.show_logs()
    qtbot.waitUntil(lambda: "started" in logs.toPlainText(), timeout=WAIT_MS)
    logs.close()
    qtbot.mouseClick(view.buttons["stop"], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(
        lambda: view.model.rows and view.model.rows[0].state == "exited", timeout=WAIT_MS
    )
    view.table.selectRow(0)
    qtbot.mouseClick(view.buttons["remove"], Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: view.model.rowCount() == 0, timeout=WAIT_MS)
    assert containers(server) == []
    assert desktop.window.errors.isHidden(), desktop.window.errors.text.text()


def test_quick_run_with_ports_shows_the_engines_warning(qtbot, desktop):
    window = desktop.repeat(RunRequest("busybox", ("echo", "up"), ports=("8080:80",)))
    qtbot.waitUntil(lambda: window.finished, timeout=WAIT_MS)
    text = window.toPlainText()
    warning = "WARNING: Published ports are discarded: this engine has no bridge network yet"
    assert text.index(warning) < text.index("up\n[exited with code 0]\n")
