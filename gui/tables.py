"""A read-only table model over a list of frozen rows (the containers, images, volumes and
networks lists), and the table each list shows it in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

Column = tuple[str, Callable[[Any], str]]
Index = QModelIndex | QPersistentModelIndex


class RowsModel(QAbstractTableModel):
    def __init__(self, columns: Sequence[Column], key: Callable[[Any], str]) -> None:
        super().__init__()
        self.columns = list(columns)
        self.key = key
        self.rows: list[Any] = []

    def set_rows(self, rows: list[Any]) -> None:
        """Replace the rows; views keep their selection by key (see `row_of`)."""
        self.beginResetModel()
        self.rows = list(rows)
        self.endResetModel()

    def row_of(self, key: str) -> int:
        return next((i for i, r in enumerate(self.rows) if self.key(r) == key), -1)

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008 - Qt's signature
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return self.columns[index.column()][1](self.rows[index.row()])
        return None

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.columns[section][0]
        return None


def row_table(model: RowsModel) -> QTableView:
    """A list's table: whole rows selected, one at a time, columns sharing the width."""
    table = QTableView(
        selectionBehavior=QAbstractItemView.SelectionBehavior.SelectRows,
        selectionMode=QAbstractItemView.SelectionMode.SingleSelection,
        alternatingRowColors=True,
    )
    table.setModel(model)
    table.verticalHeader().hide()
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    return table


def selected(table: QTableView, model: RowsModel):
    """The selected row's item, or None."""
    rows = table.selectionModel().selectedRows()
    return model.rows[rows[0].row()] if rows else None
