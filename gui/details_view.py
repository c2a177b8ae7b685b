"""The details pane under the container list: Overview, Logs, Stats, Inspect, Inside and Files
for the selected container.

The pane follows the list (the bridge refreshes it from the engine's event stream): a
container that stops, starts again or is removed while its details are open is said in words
at the top, and each tab is read again; every read runs in a worker."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QLabel, QTabWidget, QVBoxLayout, QWidget
from vmctl_gui import errors
from vmctl_gui.bridge import Bridge
from vmctl_gui.engine import ContainerRow
from vmctl_gui.files_tab import FilesTab
from vmctl_gui.inside_tab import InsideTab
from vmctl_gui.logs_tab import LogsTab
from vmctl_gui.overview_tab import InspectTab, OverviewTab
from vmctl_gui.stats_tab import StatsTab

PICK = "Select a container to see its details."


class ContainerDetails(QWidget):
    def __init__(self, bridge: Bridge, open_url: Callable[[str], object]) -> None:
        super().__init__()
        self.bridge = bridge
        self.row: ContainerRow | None = None
        self.lost = False  # the shown container left the list (removed, or the engine stopped)
        self.notice = ""  # what happened to it while shown
        self.headline = QLabel(PICK, wordWrap=True, objectName="details-headline")
        self.overview = OverviewTab(open_url, lambda: bridge.state.config.publish_address)
        self.logs = LogsTab(bridge)
        self.stats = StatsTab(bridge)
        self.inspect = InspectTab()
        self.inside = InsideTab(bridge)
        self.files = FilesTab(bridge)
        self.tabs = QTabWidget()
        for tab, title in ((self.overview, "Overview"), (self.logs, "Logs"), (self.stats, "Stats"),
                           (self.inspect, "Inspect"), (self.inside, "Inside"),
                           (self.files, "Files")):  # fmt: skip
            self.tabs.addTab(tab, title)
        self.tabs.setEnabled(False)
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.addWidget(self.headline)
        column.addWidget(self.tabs, 1)

    def show_container(self, row: ContainerRow | None) -> None:
        """The selection changed (None: nothing selected)."""
        if row is None:
            self._stop()
            self.row = None
            self.headline.setText(PICK)
            self.tabs.setEnabled(False)
            return
        if self.row is not None and row.id == self.row.id:
            return self.follow(row)
        self._stop()
        self.row, self.lost, self.notice = row, False, ""
        self.tabs.setEnabled(True)
        self.headline.setText(f"{row.name}: {row.status or row.state}")
        self._load(row)

    def follow(self, row: ContainerRow | None) -> None:
        """The list was refreshed: `row` is the shown container as it is now (None: gone)."""
        if self.row is None:
            return
        before, self.row = self.row, row or self.row
        if row is None:
            self._lose()
        elif self.lost:
            self._back(row)
        elif (before.state == "running") != (row.state == "running"):
            self._ran_or_stopped(row)
        elif not self.notice:
            self.headline.setText(f"{row.name}: {row.status or row.state}")

    def _lose(self) -> None:
        self._stop()
        self.lost = True
        gone = "was removed: its details are gone."
        if self.bridge.state.state != "running":
            gone = "cannot be seen: the engine is not running. Start it to see it again."
        self.headline.setText(f"{self.row.name} {gone}")
        self.files.gone(f"{self.row.name} {gone}")
        self.tabs.setEnabled(False)

    def _back(self, row: ContainerRow) -> None:
        """Back in the list (the engine runs again): everything is read afresh."""
        self.lost, self.notice = False, ""
        self.tabs.setEnabled(True)
        self.headline.setText(f"{row.name}: {row.status or row.state}")
        self._load(row)

    def _ran_or_stopped(self, row: ContainerRow) -> None:
        """Said until the selection changes, whatever the list says meanwhile."""
        verb = "started" if row.state == "running" else "stopped"
        self.notice = f"{row.name} {verb} while you were looking: {row.status}"
        self.headline.setText(self.notice)
        if row.state == "running":
            self.logs.restart()  # a new run: its output follows the old
        self._load(row)

    def _load(self, row: ContainerRow) -> None:
        self.bridge.inspect_container(row.id, self._show_info, self._failed)
        self.logs.show_container(row.id)
        self.stats.show_container(row.id, row.state == "running")
        self.inside.show_container(row.id)
        self.files.show_container(row.id, row.state == "running")

    def _show_info(self, info: dict) -> None:
        if self.row is not None and info.get("Id") == self.row.id:
            self.overview.show_info(info)
            self.inspect.show_info(info)

    def _failed(self, error: BaseException) -> None:
        self.headline.setText(f"Cannot read the container's details: {errors.describe(error)}")

    def _stop(self) -> None:
        self.logs.forget()
        self.stats.forget()
        self.inside.stop()
        self.files.stop()
