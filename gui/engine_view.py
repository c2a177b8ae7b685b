"""The Engine tab: the VM's state (with the stage while starting, and the failed stage and the
console's last lines when a start fails), Start / Stop / Restart, resources, disk usage, and
`docker version`'s Client and Server side by side."""

from __future__ import annotations

from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui import fmt, icons
from vmctl_gui.bridge import Bridge
from vmctl_gui.engine import DiskUsage, Version, VmState

STATE_WORDS = {
    "running": "Running",
    "starting": "Starting…",
    "stopped": "Stopped",
    "not created": "Not created yet: Start creates it",
    "degraded": "Running, but not answering",
    "error": "Failed to start",
    "unknown": "Checking…",
}
VERSION_ROWS = ("Version", "API version", "OS/Arch", "Kernel", "docker-py")


class EngineView(QWidget):
    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge
        self.state_label = QLabel(objectName="state")
        self.detail_label = QLabel(objectName="detail", wordWrap=True)
        self.start_button = QPushButton("Start", clicked=bridge.start_vm)
        self.stop_button = QPushButton("Stop", clicked=bridge.stop_vm)
        self.restart_button = QPushButton("Restart", clicked=bridge.restart_vm)
        self.progress = QPlainTextEdit(readOnly=True, maximumBlockCount=500)
        self.progress.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.progress.setPlaceholderText("The start's stages appear here.")
        self.resources = QFormLayout()
        self.disk = QFormLayout()
        self.version_grid = QGridLayout()
        self._console_shown = ""
        self._layout()
        bridge.stateChanged.connect(self.show_state)
        bridge.startProgress.connect(self.progress.appendPlainText)
        bridge.versionChanged.connect(self.show_version)
        bridge.diskChanged.connect(self.show_disk)
        bridge.busyChanged.connect(lambda _busy: self.show_state(bridge.state))
        self.show_state(bridge.state)

    def _layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.state_label, 1)
        for button in (self.start_button, self.stop_button, self.restart_button):
            top.addWidget(button)
        boxes = QHBoxLayout()
        for title, layout in (
            ("Resources", self.resources),
            ("Disk", self.disk),
            ("docker version", self.version_grid),
        ):
            box = QGroupBox(title)
            box.setLayout(layout)
            boxes.addWidget(box)
        column = QVBoxLayout(self)
        column.addLayout(top)
        column.addWidget(self.detail_label)
        column.addLayout(boxes)
        column.addWidget(self.progress, 1)

    # ---- slots ----

    def show_state(self, state: VmState) -> None:
        color = icons.COLORS[icons.look(state.state)]
        words = STATE_WORDS.get(state.state, state.state)
        if state.state == "starting" and state.detail:
            words = f"Starting: {state.detail}…"
        self.state_label.setText(f"<b style='color:{color}'>●</b> <b>{state.name}</b>: {words}")
        self.detail_label.setText(self._detail(state))
        if state.state == "error" and state.console and state.console != self._console_shown:
            self._console_shown = state.console
            self.progress.appendPlainText("--- the VM's console, last lines ---\n" + state.console)
        busy = self.bridge.busy
        self.start_button.setEnabled(not busy and state.state not in ("running", "starting"))
        self.stop_button.setEnabled(state.state in ("running", "starting", "degraded", "error"))
        self.restart_button.setEnabled(not busy and state.state in ("running", "degraded"))
        self._show_resources(state)

    def _detail(self, state: VmState) -> str:
        if state.state == "error":
            return (
                f"Stage '{state.failed_stage}' failed: {state.detail}\nTry Start again; if it "
                "fails the same way, the console's last lines below say why."
            )
        if state.state == "running":
            return f"DOCKER_HOST={state.docker_host}"
        return state.detail

    def _show_resources(self, state: VmState) -> None:
        c = state.config
        _fill(
            self.resources,
            {
                "CPUs": str(c.cpus),
                "Memory": f"{c.memory_mib} MiB",
                "Disk": f"{c.disk_gib} GiB",
                "Driver": c.driver + (f" ({c.libvirt_uri})" if c.libvirt_uri else ""),
                "Accelerator": state.accel or c.accel,
            },
        )

    def show_disk(self, usage: DiskUsage) -> None:
        _fill(
            self.disk,
            {
                "Disk image on this computer": fmt.size(usage.host_bytes),
                "Can grow to": f"{usage.capacity >> 30} GiB",
                "Images": fmt.size(usage.images_bytes),
                "Containers": fmt.size(usage.containers_bytes),
            },
        )

    def show_version(self, version: Version) -> None:
        grid = self.version_grid
        while grid.count():
            grid.takeAt(0).widget().deleteLater()
        grid.addWidget(QLabel("<b>Client</b>"), 0, 1)
        grid.addWidget(QLabel("<b>Server</b>"), 0, 2)
        for row, key in enumerate(VERSION_ROWS, start=1):
            grid.addWidget(QLabel(key), row, 0)
            for col, side in ((1, version.client), (2, version.server)):
                label = QLabel(side.get(key, "—"), objectName=f"{key}-{col}")
                grid.addWidget(label, row, col)


def _fill(form: QFormLayout, rows: dict[str, str]) -> None:
    while form.rowCount():
        form.removeRow(0)
    for key, value in rows.items():
        form.addRow(key, QLabel(value))
