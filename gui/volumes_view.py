"""The Volumes tab: every volume with its size and the containers that mount it (as `docker
system df -v` measures them); create, remove, and prune the unused ones (anonymous only, as
`docker volume prune`, or every unused one, as `-a`), a prune only after the user agrees."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui import fmt, tables
from vmctl_gui.bridge import Bridge
from vmctl_gui.engine import Pruned, VolumeRow

COLUMNS = (
    ("Name", lambda v: v.name),
    ("Size", lambda v: fmt.size(v.size) if v.size >= 0 else "—"),
    ("Used by", lambda v: ", ".join(v.containers) or "unused"),
    ("Driver", lambda v: v.driver),
    ("Created", lambda v: v.created),
)
Confirm = Callable[[str, str], bool]


class VolumesView(QWidget):
    def __init__(self, bridge: Bridge, confirm: Confirm) -> None:
        super().__init__()
        self.bridge = bridge
        self.confirm = confirm
        self.model = tables.RowsModel(COLUMNS, key=lambda v: v.name)
        self.table = tables.row_table(self.model)
        self.name = QLineEdit(placeholderText="new volume's name (empty: the engine names it)")
        self.name.returnPressed.connect(self.create)
        self.create_button = QPushButton("Create", clicked=self.create)
        self.remove_button = QPushButton("Remove", clicked=self.remove)
        self.every = QCheckBox("named ones too")
        self.prune_button = QPushButton("Prune unused…", clicked=self.prune)
        self.note = QLabel(wordWrap=True, objectName="note")
        self._layout()
        bridge.volumesChanged.connect(self.show_rows)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._enable())
        self._enable()

    def _layout(self) -> None:
        row = QHBoxLayout()
        for widget in (self.name, self.create_button, self.remove_button, self.prune_button,
                       self.every):  # fmt: skip
            row.addWidget(widget)
        column = QVBoxLayout(self)
        column.addLayout(row)
        column.addWidget(self.note)
        column.addWidget(self.table, 1)

    def show_rows(self, rows: list[VolumeRow]) -> None:
        chosen = self.selected()
        self.model.set_rows(sorted(rows, key=lambda v: (v.anonymous, v.name)))
        if chosen is not None and (row := self.model.row_of(chosen.name)) >= 0:
            self.table.selectRow(row)
        self._enable()

    def selected(self) -> VolumeRow | None:
        return tables.selected(self.table, self.model)

    def create(self) -> None:
        name = self.name.text().strip()
        self.bridge.act("create the volume", lambda: self.bridge.engine.create_volume(name),
                        lambda made: self._said(f"Created volume {made}."))  # fmt: skip
        self.name.clear()

    def remove(self) -> None:
        chosen = self.selected()
        if chosen is not None:
            self.bridge.act(f"remove the volume {chosen.name}",
                            lambda: self.bridge.engine.remove_volume(chosen.name),
                            lambda _r: self._said(f"Removed volume {chosen.name}."))  # fmt: skip

    def prune(self) -> None:
        every = self.every.isChecked()
        which = "every volume" if every else "the anonymous volumes"
        if not self.confirm("Prune volumes", f"Remove {which} no container uses? Their data "
                            "is lost."):  # fmt: skip
            return
        self.bridge.act("prune the volumes", lambda: self.bridge.engine.prune_volumes(every),
                        self._pruned)  # fmt: skip

    def _pruned(self, pruned: Pruned) -> None:
        names = ", ".join(pruned.removed) or "nothing"
        self._said(f"Pruned {names}: {fmt.size(pruned.reclaimed)} reclaimed.")

    def _said(self, words: str) -> None:
        self.note.setText(words)

    def _enable(self) -> None:
        self.remove_button.setEnabled(self.selected() is not None)
