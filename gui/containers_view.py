"""The Containers tab: a live list (the bridge refreshes it from the engine's event stream),
start / stop / restart / remove on the selected one, a logs window that follows, a shell
in the user's terminal, and the selected container's details in a pane below the list. A
published TCP port in the Ports column opens in the browser (http://localhost:PORT, where the
host agent listens for it) on a click; with several, a menu asks which."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QMenu,
    QPushButton,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)
from vmctl_gui import fmt
from vmctl_gui.bridge import Bridge
from vmctl_gui.details_view import ContainerDetails
from vmctl_gui.engine import ContainerRow, PublishedPort
from vmctl_gui.jobs import Job
from vmctl_gui.output import OutputWindow
from vmctl_gui.tables import RowsModel

COLUMNS = (
    ("Name", lambda c: c.name),
    ("Image", lambda c: c.image),
    ("Command", lambda c: c.command),
    ("State", lambda c: c.status or c.state),
    ("Health", lambda c: c.health or "—"),
    ("Created", lambda c: fmt.ago(c.created)),
    ("Ports", lambda c: c.ports),
)
PORTS_COLUMN = len(COLUMNS) - 1


class ContainersView(QWidget):
    def __init__(self, bridge: Bridge, open_shell, open_url: Callable[[str], object]) -> None:
        super().__init__()
        self.bridge = bridge
        self.open_shell = open_shell
        self.open_url = open_url
        self.model = RowsModel(COLUMNS, key=lambda c: c.id)
        self.table = QTableView(
            selectionBehavior=QAbstractItemView.SelectionBehavior.SelectRows,
            selectionMode=QAbstractItemView.SelectionMode.SingleSelection,
            alternatingRowColors=True,
        )
        self.table.setModel(self.model)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.doubleClicked.connect(lambda _i: self.show_logs())
        self.table.clicked.connect(self._clicked)
        self.port_menu: QMenu | None = None
        self.buttons: dict[str, QPushButton] = {}
        actions = QHBoxLayout()
        for action in ("start", "stop", "restart", "remove"):
            button = QPushButton(action.capitalize())
            button.clicked.connect(lambda _=False, a=action: self.act(a))
            self.buttons[action] = button
            actions.addWidget(button)
        self.buttons["logs"] = QPushButton("Logs", clicked=self.show_logs)
        self.buttons["shell"] = QPushButton("Open shell", clicked=self.shell)
        actions.addWidget(self.buttons["logs"])
        actions.addWidget(self.buttons["shell"])
        actions.addStretch(1)
        self.details = ContainerDetails(bridge, open_url)
        split = QSplitter(Qt.Orientation.Vertical, childrenCollapsible=False)
        split.addWidget(self.table)
        split.addWidget(self.details)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)  # the details need more room; the list scrolls
        column = QVBoxLayout(self)
        column.addLayout(actions)
        column.addWidget(split, 1)
        self.logs_windows: list[LogsWindow] = []
        self._refreshing = False  # the list is being replaced: its selection blinks
        bridge.containersChanged.connect(self.show_rows)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._selected())
        self._enable()

    def show_rows(self, rows: list[ContainerRow]) -> None:
        chosen = self.selected() or self.details.row  # a shown one that comes back is chosen
        self._refreshing = True
        try:
            self.model.set_rows(sorted(rows, key=lambda c: -c.created))
            if chosen is not None and (row := self.model.row_of(chosen.id)) >= 0:
                self.table.selectRow(row)
        finally:
            self._refreshing = False
        if self.details.row is not None:
            shown = self.details.row.id
            self.details.follow(next((r for r in rows if r.id == shown), None))
        self._enable()

    def _selected(self) -> None:
        self._enable()
        if not self._refreshing:
            self.details.show_container(self.selected())

    def selected(self) -> ContainerRow | None:
        rows = self.table.selectionModel().selectedRows()
        return self.model.rows[rows[0].row()] if rows else None

    def _clicked(self, index: QModelIndex) -> None:
        if index.column() == PORTS_COLUMN:
            self.open_ports(self.model.rows[index.row()])

    def open_ports(self, row: ContainerRow) -> QMenu | None:
        """One port opens at once; several pop a menu of their addresses."""
        links = row.links
        if len(links) == 1:
            self.open_port(links[0])
        elif links:
            self.port_menu = QMenu(self)
            for port in links:
                url = self.url(port)
                self.port_menu.addAction(url, lambda u=url: self.open_url(u))
            self.port_menu.popup(QCursor.pos())
        return self.port_menu if len(links) > 1 else None

    def url(self, port: PublishedPort) -> str:
        return port.url(self.bridge.state.config.publish_address)

    def open_port(self, port: PublishedPort) -> None:
        self.open_url(self.url(port))

    def act(self, action: str) -> Job | None:
        chosen = self.selected()
        return self.bridge.container_action(chosen.id, action) if chosen else None

    def show_logs(self) -> LogsWindow | None:
        chosen = self.selected()
        if chosen is None:
            return None
        window = LogsWindow(self.bridge, chosen)
        self.logs_windows.append(window)
        window.destroyed.connect(lambda *_: self.logs_windows.remove(window))
        window.show()
        return window

    def shell(self) -> None:
        chosen = self.selected()
        if chosen is not None:
            self.open_shell(chosen.id)

    def _enable(self) -> None:
        chosen = self.selected()
        running = chosen is not None and chosen.state == "running"
        self.buttons["start"].setEnabled(chosen is not None and not running)
        for name in ("stop", "restart", "shell"):
            self.buttons[name].setEnabled(running)
        for name in ("remove", "logs"):
            self.buttons[name].setEnabled(chosen is not None)


class LogsWindow(OutputWindow):
    """A container's logs, followed until the window closes."""

    def __init__(self, bridge: Bridge, container: ContainerRow) -> None:
        super().__init__(f"Logs: {container.name}")
        self.job = bridge.logs(container.id, self.add_text)
