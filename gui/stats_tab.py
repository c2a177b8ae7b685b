"""The Stats tab: CPU, memory against its limit and block I/O over the last minutes, fed by the
engine's stats stream. A container that stops, and an engine that goes away under the open
chart, are said in words above the charts; the charts keep what they had, with a gap, and go
on when the stream comes back."""

from __future__ import annotations

from PySide6.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget
from vmctl_gui import fmt
from vmctl_gui.bridge import Bridge
from vmctl_gui.charts import LineChart, Series
from vmctl_gui.jobs import Job
from vmctl_gui.samples import WINDOW, History, sample

NO_BLOCK_IO = "The engine reports no block I/O for this container."


def _percent(value: float) -> str:
    return f"{value:.1f}%"


def _bytes(value: float) -> str:
    return fmt.size(int(value))


class StatsTab(QWidget):
    def __init__(self, bridge: Bridge) -> None:
        super().__init__()
        self.bridge = bridge
        self.container_id = ""
        self.job: Job | None = None
        self.history = History()
        self.status = QLabel(wordWrap=True, objectName="stats-status")
        self.cpu = LineChart("CPU", _percent, WINDOW)
        self.memory = LineChart("Memory", _bytes, WINDOW)
        self.block = LineChart("Block I/O", _bytes, WINDOW)
        self.pids = QLabel(objectName="stats-pids")
        grid = QGridLayout()
        grid.addWidget(self.cpu, 0, 0)
        grid.addWidget(self.memory, 0, 1)
        grid.addWidget(self.block, 1, 0)
        grid.addWidget(self.pids, 1, 1)
        column = QVBoxLayout(self)
        column.addWidget(self.status)
        column.addLayout(grid, 1)

    @property
    def streaming(self) -> bool:
        return self.job is not None

    def show_container(self, container_id: str, running: bool) -> None:
        """A new container starts a new history; the same one resumes if it is not streaming."""
        if container_id != self.container_id:
            self.stop()
            self.container_id, self.history = container_id, History()
            self.status.setText("The container is not running: no stats until it starts.")
            self._draw()
        if running and not self.streaming:
            self.status.setText("Waiting for the first sample…")
            self.job = self.bridge.stats(container_id, self._event)

    def stop(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job = None

    def forget(self) -> None:
        """Stop, so that showing any container (this one too) starts a new history."""
        self.stop()
        self.container_id = ""

    def _event(self, kind: str, value) -> None:
        getattr(self, f"_on_{kind}")(value)

    def _on_sample(self, message: dict) -> None:
        self.history.add(sample(message))
        if self.history.last is not None:
            self.status.setText("Live: one sample a second, the last three minutes.")
        self._draw()

    def _on_lost(self, words: str) -> None:
        self.history.add(None)
        self.status.setText(f"{words} Stats paused; they resume when the engine answers again.")
        self._draw()

    def _on_ended(self, _value) -> None:
        self.job = None
        self.history.add(None)
        self.status.setText("The container stopped: no stats until it runs again.")
        self._draw()

    def _on_cancelled(self, _value) -> None:
        self.job = None

    def _on_gone(self, words: str) -> None:
        self.job = None
        self.status.setText(f"No stats: {words}")

    def _draw(self) -> None:
        h, last = self.history, self.history.last
        self.cpu.show_series([Series("", "#2f6fb3", h.series("cpu_percent"))])
        limit = float(last.memory_limit) if last and last.memory_limit else None
        self.memory.show_series([Series("used", "#3a8f3a", h.series("memory_used"))], limit)
        self.block.show_series([Series("read", "#2f6fb3", h.series("block_read")),
                                Series("written", "#c07020", h.series("block_write"))])  # fmt: skip
        reported = last is None or last.block_read is not None
        self.block.set_note("" if reported else NO_BLOCK_IO)
        self.pids.setText(f"Processes: {last.pids}" if last else "")
