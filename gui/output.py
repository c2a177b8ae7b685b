"""A window of streamed text (a container's logs, a quick run's output) that follows its
stream until closed: closing cancels the job, which closes the stream."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit
from vmctl_gui.jobs import Job

MAX_LINES = 10_000


class OutputWindow(QPlainTextEdit):
    job: Job | None = None

    def __init__(self, title: str) -> None:
        super().__init__(readOnly=True, maximumBlockCount=MAX_LINES)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle(title)
        self.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.resize(760, 420)

    def add_text(self, text: str) -> None:
        """At the end, whatever the user has selected or scrolled to."""
        self.moveCursor(self.textCursor().MoveOperation.End)
        self.insertPlainText(text)

    def closeEvent(self, event) -> None:
        if self.job is not None:
            self.job.cancel()
        super().closeEvent(event)
