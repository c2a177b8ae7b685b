"""The root filesystem drawn as what it is, a stack: the container's writable layer on top of
the image's layers, base at the bottom, each a band with its size and what made it (the
overlay's upper dir above its lower dirs)."""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QWidget

BAND_H = 26
GAP = 3
WRITABLE = QColor("#f3c77a")  # the container's own, written to
IMAGE = (QColor("#a9c8ea"), QColor("#c4d9f0"))  # read-only, alternating so bands part


class LayerStack(QWidget):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, str, str]] = []  # (layer, size, made by), top first
        self.setMinimumWidth(300)
        self._fit()

    def show_rows(self, rows: list[tuple[str, str, str]]) -> None:
        self.rows = rows
        self._fit()
        self.update()

    def band_texts(self) -> list[str]:
        """What each band says, top first."""
        return [f"{layer}   {size}   {made}" for layer, size, made in self.rows]

    def _fit(self) -> None:
        self.setFixedHeight(max(1, len(self.rows)) * (BAND_H + GAP) + GAP)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        for i, text in enumerate(self.band_texts()):
            band = QRectF(GAP, GAP + i * (BAND_H + GAP), self.width() - 2 * GAP, BAND_H)
            fill = WRITABLE if i == 0 else IMAGE[i % 2]
            painter.setPen(QPen(fill.darker(140), 1))
            painter.setBrush(fill)
            painter.drawRoundedRect(band, 4, 4)
            painter.setPen(QColor("#202020"))
            flags = Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft
            painter.drawText(band.adjusted(8, 0, -8, 0), flags, text)
        painter.end()
