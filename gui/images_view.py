"""The Images tab: the list, a pull with one progress bar per layer, remove, and Run…"""

from __future__ import annotations

import re

from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui import fmt
from vmctl_gui.bridge import Bridge
from vmctl_gui.engine import ImageRow, LayerProgress
from vmctl_gui.tables import RowsModel

COLUMNS = (
    ("Repository", lambda i: i.repository),
    ("Tag", lambda i: i.tag),
    ("Image ID", lambda i: fmt.short_id(i.id)),
    ("Created", lambda i: fmt.ago(i.created)),
    ("Size", lambda i: fmt.size(i.size)),
)
LAYER_ID = re.compile(r"[0-9a-f]{12}")  # docker's short layer ids; other ids are the tag
DONE_WORDS = ("Pull complete", "Already exists", "Download complete")


class PullPanel(QGroupBox):
    """One bar per layer, driven by the pull's JSON progress messages."""

    def __init__(self) -> None:
        super().__init__("Pull")
        self.form = QFormLayout(self)
        self.summary = QLabel(wordWrap=True)
        self.form.addRow(self.summary)
        self.bars: dict[str, QProgressBar] = {}
        self.hide()

    def begin(self, ref: str) -> None:
        while self.form.rowCount() > 1:
            self.form.removeRow(1)
        self.bars.clear()
        self.summary.setText(f"Pulling {ref}…")
        self.show()

    def advance(self, progress: LayerProgress) -> None:
        if not LAYER_ID.fullmatch(progress.layer):  # the tag's "Pulling from …", "Digest: …"
            self.summary.setText(progress.status)
            return
        bar = self.bars.get(progress.layer)
        if bar is None:
            bar = self.bars[progress.layer] = QProgressBar(maximum=0)
            self.form.addRow(progress.layer, bar)
        if progress.total:
            bar.setMaximum(progress.total)
            bar.setValue(min(progress.current, progress.total))
        elif progress.status in DONE_WORDS:
            bar.setMaximum(max(bar.maximum(), 1))  # keep the byte count a download showed
            bar.setValue(bar.maximum())
        bar.setFormat(f"{progress.status} %p%" if progress.total else progress.status)

    def finish(self, ref: str, ok: bool) -> None:
        if ok:
            self.summary.setText(f"Pulled {ref}")
            for bar in self.bars.values():
                bar.setMaximum(max(bar.maximum(), 1))
                bar.setValue(bar.maximum())
        else:
            self.summary.setText(f"Pulling {ref} failed: see the message above")


class ImagesView(QWidget):
    def __init__(self, bridge: Bridge, run_image) -> None:
        super().__init__()
        self.bridge = bridge
        self.run_image = run_image
        self.model = RowsModel(COLUMNS, key=lambda i: f"{i.id}|{i.repository}:{i.tag}")
        self.table = QTableView(
            selectionBehavior=QAbstractItemView.SelectionBehavior.SelectRows,
            selectionMode=QAbstractItemView.SelectionMode.SingleSelection,
        )
        self.table.setModel(self.model)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.ref = QLineEdit(placeholderText="image to pull, e.g. busybox or alpine:3.20")
        self.ref.returnPressed.connect(self.pull)
        self.pull_button = QPushButton("Pull", clicked=self.pull)
        self.remove_button = QPushButton("Remove", clicked=self.remove)
        self.run_button = QPushButton("Run…", clicked=self.run)
        self.panel = PullPanel()
        row = QHBoxLayout()
        for widget in (self.ref, self.pull_button, self.remove_button, self.run_button):
            row.addWidget(widget)
        column = QVBoxLayout(self)
        column.addLayout(row)
        column.addWidget(self.panel)
        column.addWidget(self.table, 1)
        bridge.imagesChanged.connect(self.show_rows)
        bridge.pullProgress.connect(lambda _ref, p: self.panel.advance(p))
        bridge.pullFinished.connect(self._pulled)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._enable())
        self._enable()

    def show_rows(self, rows: list[ImageRow]) -> None:
        self.model.set_rows(sorted(rows, key=lambda i: (i.repository, i.tag)))
        self._enable()

    def selected(self) -> ImageRow | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.rows[rows[0].row()] if rows else None

    def pull(self) -> None:
        ref = self.ref.text().strip()
        if not ref:
            return
        self.panel.begin(ref)
        self.pull_button.setEnabled(False)
        self.bridge.pull(ref)

    def _pulled(self, ref: str, ok: bool) -> None:
        self.panel.finish(ref, ok)
        self.pull_button.setEnabled(True)

    def remove(self) -> None:
        chosen = self.selected()
        if chosen is not None:
            named = chosen.tag != "<none>"
            self.bridge.remove_image(f"{chosen.repository}:{chosen.tag}" if named else chosen.id)

    def run(self) -> None:
        chosen = self.selected()
        if chosen is not None:
            named = chosen.tag != "<none>"
            self.run_image(f"{chosen.repository}:{chosen.tag}" if named else chosen.id)

    def _enable(self) -> None:
        chosen = self.selected() is not None
        self.remove_button.setEnabled(chosen)
        self.run_button.setEnabled(chosen)
