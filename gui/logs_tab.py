"""The Logs tab: the selected container's logs, streamed (`docker logs -f`), with timestamps
on demand, search, and follow (stay at the newest line)."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui.bridge import Bridge
from vmctl_gui.jobs import Job
from vmctl_gui.output import MAX_LINES

RECOUNT_MS = 250  # matches are counted again this long after lines stop arriving


class LogsTab(QWidget):
    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge
        self.container_id = ""
        self.job: Job | None = None
        self.text = QPlainTextEdit(readOnly=True, maximumBlockCount=MAX_LINES)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.follow = QCheckBox("Follow", checked=True)
        self.follow.toggled.connect(lambda on: on and self._to_end())
        self.timestamps = QCheckBox("Timestamps")
        self.timestamps.toggled.connect(lambda _on: self.restart())
        self.search = QLineEdit(placeholderText="Search", clearButtonEnabled=True)
        self.search.textChanged.connect(lambda _t: self.find(again=False))
        self.search.returnPressed.connect(self.find)
        self.next_button = QPushButton("Next", clicked=self.find)
        self.matches = QLabel()
        self._recount = QTimer(self, singleShot=True, interval=RECOUNT_MS, timeout=self._count)
        bar = QHBoxLayout()
        for widget in (self.follow, self.timestamps, self.search, self.next_button, self.matches):
            bar.addWidget(widget)
        column = QVBoxLayout(self)
        column.addLayout(bar)
        column.addWidget(self.text)

    def show_container(self, container_id: str) -> None:
        if container_id != self.container_id:
            self.container_id = container_id
            self.restart()

    def restart(self) -> None:
        """From the first line again (the container restarted, timestamps toggled)."""
        self.stop()
        self.text.clear()
        if self.container_id:
            self.job = self.bridge.logs(
                self.container_id, self.add_text, timestamps=self.timestamps.isChecked()
            )

    def stop(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job = None

    def forget(self) -> None:
        """Stop, so that showing any container (this one too) reads its logs afresh."""
        self.stop()
        self.container_id = ""

    def add_text(self, text: str) -> None:
        scrollbar = self.text.verticalScrollBar()
        position = scrollbar.value()
        cursor = self.text.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(text)
        if self.follow.isChecked():
            self._to_end()
        else:
            scrollbar.setValue(position)
        if self.search.text():
            self._recount.start()  # once after a burst of lines, not per line

    def _to_end(self) -> None:
        scrollbar = self.text.verticalScrollBar()
        scrollbar.setValue(scrollbar.maximum())

    def find(self, again: bool = True) -> bool:
        """Select the next match (from the top when none is after the cursor); following stops,
        so the match stays in view."""
        needle = self.search.text()
        self._count()
        if not needle:
            return False
        if not again:
            self.text.moveCursor(self.text.textCursor().MoveOperation.Start)
        found = self.text.find(needle) or self._wrap(needle)
        if found:
            self.follow.setChecked(False)
        return found

    def _wrap(self, needle: str) -> bool:
        self.text.moveCursor(self.text.textCursor().MoveOperation.Start)
        return self.text.find(needle)

    def _count(self) -> int:
        needle = self.search.text()
        count = self.text.toPlainText().lower().count(needle.lower()) if needle else 0
        self.matches.setText(f"{count} match{'es' if count != 1 else ''}" if needle else "")
        return count
