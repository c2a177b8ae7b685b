"""Build…: a dialog (a folder, its Dockerfile, tags, build args) and a window that streams the
build's output, with Cancel; a failing build says which step failed, in the engine's words.

`parse_build` is pure: the dialog's fields in, a BuildRequest out, or a ValueError naming the
field that is wrong and how to write it."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import Qt
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
from vmctl_gui.building import BuildLog
from vmctl_gui.engine import BuildRequest
from vmctl_gui.output import OutputWindow

from vmctl.errors import VmctlError

_TAG = re.compile(r"[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?")  # docker's lower-case refs
_ARG = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)


def parse_build(folder: str, dockerfile: str, tags: str, args: str) -> BuildRequest:
    context = Path(folder.strip()).expanduser()
    if not folder.strip() or not context.is_dir():
        raise ValueError(f"Folder: {folder.strip() or 'none given'} is not a folder")
    name = dockerfile.strip() or "Dockerfile"
    if not (context / name).is_file():
        raise ValueError(f"Dockerfile: there is no {name} in {context}")
    tag_list = tuple(t for t in re.split(r"[,\s]+", tags.strip()) if t)
    for tag in tag_list:
        if not _TAG.fullmatch(tag):
            raise ValueError(f"Tags: {tag!r} is not an image name, e.g. myapp or myapp:1.0")
    pairs = []
    for line in (line.strip() for line in args.splitlines()):
        if line and not (match := _ARG.fullmatch(line)):
            raise ValueError(f"Build args: {line!r} is not NAME=value (one a line)")
        if line:
            pairs.append((match.group(1), match.group(2)))
    return BuildRequest(str(context), name, tag_list, tuple(pairs))


class BuildDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Build an image")
        self.folder = QLineEdit(placeholderText="the folder to build, e.g. ~/src/myapp")
        self.dockerfile = QLineEdit(placeholderText="Dockerfile (inside the folder)")
        self.tags = QLineEdit(placeholderText="optional, e.g. myapp:1.0, myapp:latest")
        self.args = QPlainTextEdit(placeholderText="optional, NAME=value, one a line")
        self.args.setMaximumHeight(64)
        self.problem = QLabel(wordWrap=True, objectName="problem")
        self.problem.setStyleSheet("color: #c8372d")
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Build")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self._layout(buttons)
        self.request: BuildRequest | None = None

    def _layout(self, buttons: QDialogButtonBox) -> None:
        folder = QHBoxLayout()
        folder.addWidget(self.folder, 1)
        folder.addWidget(QPushButton("Choose…", clicked=self.choose_folder))
        dockerfile = QHBoxLayout()
        dockerfile.addWidget(self.dockerfile, 1)
        dockerfile.addWidget(QPushButton("Choose…", clicked=self.choose_dockerfile))
        form = QFormLayout()
        form.addRow("Folder", folder)
        form.addRow("Dockerfile", dockerfile)
        form.addRow("Tags", self.tags)
        form.addRow("Build args", self.args)
        column = QVBoxLayout(self)
        column.addLayout(form)
        column.addWidget(self.problem)
        column.addWidget(buttons)

    def choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "The folder to build", self.folder.text())
        if chosen:
            self.folder.setText(chosen)

    def choose_dockerfile(self) -> None:
        start = self.folder.text() or str(Path.home())
        chosen, _filter = QFileDialog.getOpenFileName(self, "The Dockerfile", start)
        if chosen:
            folder = Path(self.folder.text() or Path(chosen).parent)
            try:
                self.dockerfile.setText(str(Path(chosen).relative_to(folder)))
            except ValueError:
                self.problem.setText("Dockerfile: choose one inside the folder being built")

    def accept(self) -> None:
        try:
            self.request = parse_build(self.folder.text(), self.dockerfile.text(),
                                       self.tags.text(), self.args.toPlainText())  # fmt: skip
        except ValueError as e:
            self.problem.setText(str(e))
            return
        super().accept()


class BuildWindow(QWidget):
    """The build's output as it streams; Cancel stops it (the engine stops a build whose
    client went away); the status line says how it ended."""

    def __init__(self, bridge: Bridge, request: BuildRequest) -> None:
        super().__init__()
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle(f"Build: {request.title}")
        self.log = BuildLog()
        self.output = OutputWindow("")
        self.status = QLabel(f"Building {request.title}…", wordWrap=True, objectName="status")
        self.cancel_button = QPushButton("Cancel", clicked=self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        row.addWidget(self.cancel_button)
        column = QVBoxLayout(self)
        column.addLayout(row)
        column.addWidget(self.output, 1)
        self.resize(820, 480)
        self.ended: bool | None = None  # True built, False failed, None still going
        work = lambda job: _stream(bridge, request, job)  # noqa: E731
        self.job = bridge.follow(f"build {request.title}", work, self._message, self._end)

    def _message(self, message: dict) -> None:
        self.output.add_text(self.log.add(message))

    def _end(self, ok: bool) -> None:
        failed = self.log.failure
        self.ended = ok and not failed
        self.cancel_button.setEnabled(False)
        if failed:
            self.status.setText(f"Build failed: {failed}")
        elif ok:
            self.status.setText(f"Built {self.log.image[7:19] or 'the image'}.")
        else:
            self.status.setText("Build failed: see the message above.")

    def cancel(self) -> None:
        self.job.cancel()
        self.ended = False
        self.cancel_button.setEnabled(False)
        self.status.setText("Build cancelled.")

    def closeEvent(self, event) -> None:
        if self.ended is None:
            self.job.cancel()
        super().closeEvent(event)


def _stream(bridge: Bridge, request: BuildRequest, job) -> None:
    """In the worker: every message to the window; closing the stream is the cancel. A
    failed step is raised at the end, so the error bar says it too."""
    messages = bridge.engine.build(request)
    job.on_cancel(messages.close)
    failed = BuildLog()
    for message in messages:
        failed.add(message)
        job.progress(message)
    if failed.failure:
        raise VmctlError(failed.failure)
