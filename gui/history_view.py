"""An image's history (`docker history`): each step that made it, newest first, with the
layer's size and the command of the step; a window per image, read in a worker."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHeaderView, QLabel, QVBoxLayout, QWidget
from vmctl_gui import fmt, tables
from vmctl_gui.bridge import Bridge
from vmctl_gui.engine import HistoryRow

COLUMNS = (
    ("Created by", lambda h: h.created_by),
    ("Size", lambda h: fmt.size(h.size)),
    ("Created", lambda h: fmt.ago(h.created) if h.created else "—"),
    ("Image", lambda h: fmt.short_id(h.id) if h.id != "<missing>" else h.id),
    ("Comment", lambda h: h.comment),
)


class HistoryWindow(QWidget):
    def __init__(self, bridge: Bridge, image: str) -> None:
        super().__init__()
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.setWindowTitle(f"History: {image}")
        self.model = tables.RowsModel(COLUMNS, key=lambda h: f"{h.id}|{h.created_by}")
        self.table = tables.row_table(self.model)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)  # the command
        self.summary = QLabel(f"Reading the history of {image}…", wordWrap=True)
        column = QVBoxLayout(self)
        column.addWidget(self.summary)
        column.addWidget(self.table, 1)
        self.resize(900, 400)
        self.job = bridge.read(f"read the history of {image}",
                               lambda: bridge.engine.history(image), self.show_rows)  # fmt: skip

    def show_rows(self, rows: list[HistoryRow]) -> None:
        self.model.set_rows(rows)
        layers = sum(1 for r in rows if r.size)
        total = fmt.size(sum(r.size for r in rows))
        steps = f"{len(rows)} step{'s' if len(rows) != 1 else ''}"
        self.summary.setText(f"{steps}, {layers} of them with content: {total}.")
