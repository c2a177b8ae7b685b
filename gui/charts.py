"""A line chart drawn with QPainter (pyside6-essentials has no QtCharts): the last minutes of
one or more series, a ceiling line (a memory limit), the latest values in the title, and a
note in words where there is nothing to draw. None in a series is a gap."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

MARGIN = 8
TITLE_H = 20


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    values: Sequence[float | None]


class LineChart(QWidget):
    def __init__(self, title: str, fmt: Callable[[float], str], window: int) -> None:
        super().__init__()
        self.title, self.fmt, self.window = title, fmt, window
        self.series: list[Series] = []
        self.ceiling: float | None = None  # drawn as a dashed line, and the top of the scale
        self.note = ""
        self.setMinimumSize(220, 120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def show_series(self, series: list[Series], ceiling: float | None = None) -> None:
        self.series, self.ceiling = series, ceiling
        self.update()

    def set_note(self, note: str) -> None:
        self.note = note
        self.update()

    def caption(self) -> str:
        """The title with each series' latest value: what the chart says in words."""
        latest = [
            f"{s.label} {self.fmt(v)}" for s in self.series if (v := _last(s.values)) is not None
        ]
        limit = [f"limit {self.fmt(self.ceiling)}"] if self.ceiling else []
        return "  ".join([self.title, *latest, *limit])

    def top(self) -> float:
        """The scale's top: the ceiling when the values come near it (a memory limit is
        worth seeing then), else a little above the highest value, so small ones show."""
        highest = max([v for s in self.series for v in s.values if v is not None], default=0.0)
        if self.ceiling_shown:
            return max(self.ceiling or 0.0, highest)
        return max(highest * 1.25, 1.0)

    @property
    def ceiling_shown(self) -> bool:
        highest = max([v for s in self.series for v in s.values if v is not None], default=0.0)
        return bool(self.ceiling) and (self.ceiling or 0.0) <= 3 * highest

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), self.palette().base())
        painter.setPen(self.palette().text().color())
        painter.drawText(QRectF(MARGIN, 0, self.width() - 2 * MARGIN, TITLE_H),
                         Qt.AlignmentFlag.AlignVCenter, self.caption())  # fmt: skip
        plot = QRectF(MARGIN, TITLE_H, self.width() - 2 * MARGIN, self.height() - TITLE_H - MARGIN)
        painter.setPen(QPen(QColor("#c8c8c8"), 1))
        painter.drawRect(plot)
        if self.note:
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(
                plot, Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.note
            )
        top = self.top()
        if any(v is not None for s in self.series for v in s.values):
            self._axes(painter, plot, top)
        if self.ceiling_shown:
            self._ceiling(painter, plot, top)
        for series in self.series:
            painter.setPen(QPen(QColor(series.color), 1.6))
            painter.drawPath(self._path(series.values, plot, top))
        painter.end()

    def _axes(self, painter: QPainter, plot: QRectF, top: float) -> None:
        """The scale's top value, and the time span: the newest sample is at the right."""
        painter.setPen(self.palette().placeholderText().color())
        inner = plot.adjusted(4, 2, -4, -2)
        painter.drawText(
            inner, Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft, self.fmt(top)
        )
        span = f"{self.window // 60} min ago" if self.window >= 60 else f"{self.window} s ago"
        painter.drawText(inner, Qt.AlignmentFlag.AlignBottom | Qt.AlignmentFlag.AlignLeft, span)
        painter.drawText(inner, Qt.AlignmentFlag.AlignBottom | Qt.AlignmentFlag.AlignRight, "now")

    def _ceiling(self, painter: QPainter, plot: QRectF, top: float) -> None:
        y = plot.bottom() - plot.height() * (self.ceiling or 0) / top
        painter.setPen(QPen(QColor("#b04040"), 1, Qt.PenStyle.DashLine))
        painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))

    def _path(self, values: Sequence[float | None], plot: QRectF, top: float) -> QPainterPath:
        """Newest at the right edge; a None lifts the pen, so a gap shows as a gap."""
        path, pen_down = QPainterPath(), False
        step = plot.width() / max(self.window - 1, 1)
        start = self.window - len(values)
        for i, value in enumerate(values):
            if value is None:
                pen_down = False
                continue
            point = QPointF(plot.left() + (start + i) * step,
                            plot.bottom() - plot.height() * min(value / top, 1.0))  # fmt: skip
            path.lineTo(point) if pen_down else path.moveTo(point)
            pen_down = True
        return path


def _last(values: Sequence[float | None]) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)
