"""Quick run: a small dialog (image, command, ports, env) and a window with the output.

`parse_run` is pure: the dialog's text fields in, a RunRequest out, or a ValueError saying which
field is wrong and how to write it.
"""

from __future__ import annotations

import re
import shlex

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui.bridge import Bridge
from vmctl_gui.engine import LayerProgress, RunRequest
from vmctl_gui.output import OutputWindow

_PORT = re.compile(r"(\d{1,5}):(\d{1,5})(/(tcp|udp))?")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)


def parse_run(image: str, command: str, ports: str, env: str) -> RunRequest:
    image = image.strip()
    if not image or any(ch.isspace() for ch in image):
        raise ValueError("Image: give one image name, e.g. busybox or alpine:3.20")
    try:
        argv = tuple(shlex.split(command))
    except ValueError as e:
        raise ValueError(f"Command: {e} (quote it as you would in a shell)") from None
    port_list = tuple(p for p in re.split(r"[,\s]+", ports.strip()) if p)
    for port in port_list:
        match = _PORT.fullmatch(port)
        if not match or not all(0 < int(n) < 65536 for n in match.group(1, 2)):
            raise ValueError(f"Ports: {port!r} is not HOST:CONTAINER, e.g. 8080:80 or 53:53/udp")
    env_list = tuple(line.strip() for line in env.splitlines() if line.strip())
    for pair in env_list:
        if not _ENV.fullmatch(pair):
            raise ValueError(f"Env: {pair!r} is not NAME=value (one a line)")
    return RunRequest(image, argv, env_list, port_list)


class QuickRunDialog(QDialog):
    def __init__(self, parent: QWidget | None = None, image: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Quick run")
        self.image = QLineEdit(image, placeholderText="busybox")
        self.command = QLineEdit(placeholderText="optional, e.g. echo hello")
        self.ports = QLineEdit(placeholderText="optional, e.g. 8080:80")
        self.env = QPlainTextEdit(placeholderText="optional, NAME=value, one a line")
        self.env.setMaximumHeight(64)
        self.problem = QLabel(wordWrap=True, objectName="problem")
        self.problem.setStyleSheet("color: #c8372d")
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Run")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout()
        form.addRow("Image", self.image)
        form.addRow("Command", self.command)
        form.addRow("Ports", self.ports)
        form.addRow("Env", self.env)
        column = QVBoxLayout(self)
        column.addLayout(form)
        column.addWidget(self.problem)
        column.addWidget(buttons)
        self.request: RunRequest | None = None

    def accept(self) -> None:
        try:
            self.request = parse_run(
                self.image.text(), self.command.text(), self.ports.text(), self.env.toPlainText()
            )
        except ValueError as e:
            self.problem.setText(str(e))
            return
        super().accept()


class RunWindow(OutputWindow):
    """A quick run's output: pull progress first, then what the container prints."""

    done = Signal()

    def __init__(self, bridge: Bridge, request: RunRequest) -> None:
        super().__init__(f"Run: {request.title}")
        self.finished = False
        self._pulling: set[str] = set()
        self.job = bridge.run(request, self.add_text, self._finish, self._pull)

    def _pull(self, progress: LayerProgress) -> None:
        """One line per layer state change, not per byte: the window is for output."""
        key = f"{progress.layer}:{progress.status}"
        if progress.status and key not in self._pulling:
            self._pulling.add(key)
            self.add_text(f"{progress.layer + ': ' if progress.layer else ''}{progress.status}\n")

    def _finish(self) -> None:
        self.finished = True
        self.done.emit()
