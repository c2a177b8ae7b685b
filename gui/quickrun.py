"""Quick run: a small dialog (image, command, ports, env, a folder to mount at the same path,
as `-v "$PWD":"$PWD"`) and a window with the output; each published TCP port gets an "Open in
browser" button once it answers on this machine (the host agent carries it), asked by a probe
in a worker. The VM must share the folder (Settings): the engine refuses one it does not see.

`parse_run` is pure: the dialog's text fields in, a RunRequest out, or a ValueError saying which
field is wrong and how to write it.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from collections.abc import Callable

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui.bridge import Bridge
from vmctl_gui.engine import LayerProgress, RunRequest
from vmctl_gui.jobs import Job
from vmctl_gui.output import OutputWindow

_PORT = re.compile(r"(\d{1,5}):(\d{1,5})(/(tcp|udp))?")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)


def parse_run(image: str, command: str, ports: str, env: str, folder: str = "") -> RunRequest:
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
    return RunRequest(image, argv, env_list, port_list, _folders(folder.strip()))


def _folders(folder: str) -> tuple[str, ...]:
    if not folder:
        return ()
    if not os.path.isabs(folder) or not os.path.isdir(folder):
        raise ValueError(f"Folder: {folder!r} is not a folder on this machine (give its full "
                         "path, or choose it with Browse…)")  # fmt: skip
    return (os.path.normpath(folder),)


def unshared(request: RunRequest, shared: tuple[str, ...]) -> str:
    """Words for a folder the VM does not share (`shared`: its shared folders' host paths),
    which the engine would refuse ("mounts denied"); "" when all are shared."""
    for folder in request.folders:
        if not any(os.path.commonpath([folder, root]) == root for root in shared):
            return (f"Folder: {folder} is not shared with the VM (it shares "
                    f"{', '.join(shared)}): add it in Settings, Shared folders")  # fmt: skip
    return ""


class QuickRunDialog(QDialog):
    """`shared`: the VM's shared folders (host paths), where a folder to mount must be."""

    def __init__(self, parent: QWidget | None = None, image: str = "",
                 shared: tuple[str, ...] = ()) -> None:  # fmt: skip
        super().__init__(parent)
        self.shared = shared
        self.setWindowTitle("Quick run")
        self.image = QLineEdit(image, placeholderText="busybox")
        self.command = QLineEdit(placeholderText="optional, e.g. echo hello")
        self.ports = QLineEdit(placeholderText="optional, e.g. 8080:80")
        self.env = QPlainTextEdit(placeholderText="optional, NAME=value, one a line")
        self.env.setMaximumHeight(64)
        self.folder = QLineEdit(placeholderText="optional: mounted at the same path")
        self.browse = QPushButton("Browse…", clicked=self._browse)
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
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder, 1)
        folder_row.addWidget(self.browse)
        form.addRow("Folder", folder_row)
        column = QVBoxLayout(self)
        column.addLayout(form)
        column.addWidget(self.problem)
        column.addWidget(buttons)
        self.request: RunRequest | None = None

    def accept(self) -> None:
        try:
            self.request = parse_run(self.image.text(), self.command.text(), self.ports.text(),
                                     self.env.toPlainText(), self.folder.text())  # fmt: skip
        except ValueError as e:
            self.problem.setText(str(e))
            return
        self.problem.setText(unshared(self.request, self.shared))
        if not self.problem.text():
            super().accept()

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "A folder to mount in the container")
        if chosen:
            self.folder.setText(chosen)


def port_answers(url: str, timeout: float = 2.0) -> bool:
    """Whether a server answers an HTTP request at the URL. A connection alone proves
    nothing: the engine's proxy (and the host agent's) accepts one for a published port
    whether or not anything listens in the container yet, then closes it unanswered."""
    parts = QUrl(url)
    try:
        with socket.create_connection((parts.host(), parts.port()), timeout=timeout) as s:
            s.sendall(f"HEAD / HTTP/1.0\r\nHost: {parts.host()}\r\n\r\n".encode())
            return bool(s.recv(1))
    except OSError:
        return False


class RunWindow(QWidget):
    """A quick run's output: pull progress first, then what the container prints; above it,
    a button per published TCP port, enabled once the port answers."""

    done = Signal()

    def __init__(self, bridge: Bridge, request: RunRequest, open_url: Callable[[str], object],
                 probe: Callable[[str], bool] = port_answers) -> None:  # fmt: skip
        super().__init__()
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle(f"Run: {request.title}")
        self.output = OutputWindow("")
        self.links: dict[str, QPushButton] = {}
        column = QVBoxLayout(self)
        row = QHBoxLayout()
        address = bridge.state.config.publish_address
        for url in (p.url(address) for p in request.published):
            button = QPushButton(f"Waiting for {url} to answer…", enabled=False)
            button.clicked.connect(lambda _=False, u=url: open_url(u))
            self.links[url] = button
            row.addWidget(button)
        row.addStretch(1)
        column.addLayout(row)
        column.addWidget(self.output, 1)
        self.resize(760, 420)
        self.finished = False
        self._pulling: set[str] = set()
        self.job = bridge.run(request, self.add_text, self._finish, self._pull)
        self.probes = [watch_port(bridge, url, probe, self._answered) for url in self.links]

    def add_text(self, text: str) -> None:
        self.output.add_text(text)

    def toPlainText(self) -> str:
        return self.output.toPlainText()

    def _answered(self, url: str) -> None:
        self.links[url].setText(f"Open {url} in the browser")
        self.links[url].setEnabled(True)

    def closeEvent(self, event) -> None:
        for job in (self.job, *self.probes):
            job.cancel()
        super().closeEvent(event)

    def _pull(self, progress: LayerProgress) -> None:
        """One line per layer state change, not per byte: the window is for output."""
        key = f"{progress.layer}:{progress.status}"
        if progress.status and key not in self._pulling:
            self._pulling.add(key)
            self.add_text(f"{progress.layer + ': ' if progress.layer else ''}{progress.status}\n")

    def _finish(self) -> None:
        self.finished = True
        for job in self.probes:
            job.cancel()
        for url, button in self.links.items():
            if not button.isEnabled():
                button.setText(f"{url} never answered: the container ended")
        self.done.emit()


PROBE_EVERY_S = 0.5


def watch_port(bridge: Bridge, url: str, answers: Callable[[str], bool], on_answer) -> Job:
    """Ask `answers(url)` in a worker until it is true (or the job is cancelled)."""

    def work(job: Job) -> None:
        while not job.cancelled and not answers(url):
            job._cancel.wait(PROBE_EVERY_S)  # the worker waits; the UI thread never does
        job.progress(url)

    return bridge.follow(f"reach {url}", work, on_answer, lambda _ok: None)
