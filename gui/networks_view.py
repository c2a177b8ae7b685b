"""The Networks tab: a small list of the engine's networks (subnet, gateway, the containers
attached with their addresses); create a bridge network (a subnet optional, as `docker network
create --subnet`) and remove one. The engine's own (bridge, host, none) cannot be removed."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QLineEdit, QPushButton, QVBoxLayout, QWidget
from vmctl_gui import fmt, tables
from vmctl_gui.bridge import Bridge
from vmctl_gui.engine import NetworkRow

COLUMNS = (
    ("Name", lambda n: n.name),
    ("ID", lambda n: fmt.short_id(n.id)),
    ("Driver", lambda n: n.driver),
    ("Subnet", lambda n: n.subnet or "—"),
    ("Gateway", lambda n: n.gateway or "—"),
    ("Containers", lambda n: ", ".join(n.containers) or "none"),
)


class NetworksView(QWidget):
    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge
        self.model = tables.RowsModel(COLUMNS, key=lambda n: n.id)
        self.table = tables.row_table(self.model)
        self.name = QLineEdit(placeholderText="new network's name")
        self.subnet = QLineEdit(placeholderText="subnet (optional), e.g. 172.30.0.0/16")
        self.create_button = QPushButton("Create", clicked=self.create)
        self.remove_button = QPushButton("Remove", clicked=self.remove)
        self.note = QLabel(wordWrap=True, objectName="note")
        row = QHBoxLayout()
        for widget in (self.name, self.subnet, self.create_button, self.remove_button):
            row.addWidget(widget)
        column = QVBoxLayout(self)
        column.addLayout(row)
        column.addWidget(self.note)
        column.addWidget(self.table, 1)
        bridge.networksChanged.connect(self.show_rows)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._enable())
        self._enable()

    def show_rows(self, rows: list[NetworkRow]) -> None:
        chosen = self.selected()
        self.model.set_rows(sorted(rows, key=lambda n: (not n.builtin, n.name)))
        if chosen is not None and (row := self.model.row_of(chosen.id)) >= 0:
            self.table.selectRow(row)
        self._enable()

    def selected(self) -> NetworkRow | None:
        return tables.selected(self.table, self.model)

    def create(self) -> None:
        name, subnet = self.name.text().strip(), self.subnet.text().strip()
        if not name:
            self.note.setText("Give the network a name.")
            return
        self.bridge.act(f"create the network {name}",
                        lambda: self.bridge.engine.create_network(name, subnet),
                        lambda _id: self.note.setText(f"Created network {name}."))  # fmt: skip

    def remove(self) -> None:
        chosen = self.selected()
        if chosen is None:
            return
        done = f"Removed network {chosen.name}."
        self.bridge.act(f"remove the network {chosen.name}",
                        lambda: self.bridge.engine.remove_network(chosen.id),
                        lambda _r: self.note.setText(done))  # fmt: skip

    def _enable(self) -> None:
        chosen = self.selected()
        self.remove_button.setEnabled(chosen is not None and not chosen.builtin)
