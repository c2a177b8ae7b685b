"""The Images tab: the list, a pull or a push with one progress bar per layer, remove, Run…,
History, Build… and prune (dangling images, or every unused one, after asking)."""

from __future__ import annotations

import re

from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
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
from vmctl_gui.build_view import BuildDialog, BuildWindow
from vmctl_gui.engine import BuildRequest, ImageRow, LayerProgress, Pruned
from vmctl_gui.history_view import HistoryWindow
from vmctl_gui.tables import RowsModel
from vmctl_gui.volumes_view import Confirm

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
        self.verb = "pull"
        self.hide()

    def begin(self, ref: str, verb: str = "pull") -> None:
        while self.form.rowCount() > 1:
            self.form.removeRow(1)
        self.bars.clear()
        self.verb = verb
        self.setTitle(verb.capitalize())
        self.summary.setText(f"{verb.capitalize()}ing {ref}…")
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
            self.summary.setText(f"{self.verb.capitalize()}ed {ref}")
            for bar in self.bars.values():
                bar.setMaximum(max(bar.maximum(), 1))
                bar.setValue(bar.maximum())
        else:
            self.summary.setText(f"{self.verb.capitalize()}ing {ref} failed: see the message above")


class ImagesView(QWidget):
    def __init__(self, bridge: Bridge, run_image, confirm: Confirm) -> None:
        super().__init__()
        self.bridge = bridge
        self.run_image = run_image
        self.confirm = confirm
        self.windows: list[QWidget] = []  # history and build windows, until closed
        self.pushing: str | None = None
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
        self.history_button = QPushButton("History", clicked=self.history)
        self.push_button = QPushButton("Push", clicked=self.push)
        self.build_button = QPushButton("Build…", clicked=self.build)
        self.prune_button = QPushButton("Prune…", clicked=self.prune)
        self.every = QCheckBox("unused too")
        self.note = QLabel(wordWrap=True, objectName="note")
        self.panel = PullPanel()
        row = QHBoxLayout()
        for widget in (self.ref, self.pull_button, self.remove_button, self.run_button,
                       self.history_button, self.push_button):  # fmt: skip
            row.addWidget(widget)
        more = QHBoxLayout()
        for widget in (self.build_button, self.prune_button, self.every):
            more.addWidget(widget)
        more.addWidget(self.note, 1)
        column = QVBoxLayout(self)
        column.addLayout(row)
        column.addLayout(more)
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
        """A pull or a push ended (the bridge says both with pullFinished)."""
        self.panel.finish(ref, ok)
        if ref == self.pushing:
            self.pushing = None
        else:
            self.pull_button.setEnabled(True)
        self._enable()

    def chosen_ref(self) -> str | None:
        """The selected image by its name, or by id when it has none."""
        chosen = self.selected()
        if chosen is None:
            return None
        return f"{chosen.repository}:{chosen.tag}" if chosen.tag != "<none>" else chosen.id

    def remove(self) -> None:
        if (ref := self.chosen_ref()) is not None:
            self.bridge.remove_image(ref)

    def run(self) -> None:
        if (ref := self.chosen_ref()) is not None:
            self.run_image(ref)

    def push(self) -> None:
        chosen = self.selected()
        if chosen is not None and chosen.tag != "<none>":
            ref = f"{chosen.repository}:{chosen.tag}"
            self.panel.begin(ref, "push")
            self.pushing = ref
            self._enable()
            self.bridge.transfer("push", ref)

    def history(self) -> HistoryWindow | None:
        ref = self.chosen_ref()
        return None if ref is None else self._keep(HistoryWindow(self.bridge, ref))

    def build(self, request: BuildRequest | None = None) -> BuildWindow | None:
        """Asks with the Build dialog unless given the request (as a test does)."""
        if request is None:
            dialog = BuildDialog(self)
            if dialog.exec() != BuildDialog.DialogCode.Accepted or dialog.request is None:
                return None
            request = dialog.request
        return self._keep(BuildWindow(self.bridge, request))

    def _keep(self, window):
        self.windows.append(window)
        window.destroyed.connect(lambda *_: self.windows.remove(window))
        window.show()
        return window

    def prune(self) -> None:
        every = self.every.isChecked()
        which = "every image no container uses" if every else "the dangling (untagged) images"
        if self.confirm("Prune images", f"Remove {which}?"):
            self.bridge.act("prune the images", lambda: self.bridge.engine.prune_images(every),
                            self._pruned)  # fmt: skip

    def _pruned(self, pruned: Pruned) -> None:
        count = sum(1 for r in pruned.removed if r)
        self.note.setText(f"Pruned: {count} removed, {fmt.size(pruned.reclaimed)} reclaimed.")

    def _enable(self) -> None:
        chosen = self.selected()
        for button in (self.remove_button, self.run_button, self.history_button):
            button.setEnabled(chosen is not None)
        named = chosen is not None and chosen.tag != "<none>"
        self.push_button.setEnabled(named and self.pushing is None)
