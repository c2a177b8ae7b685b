"""Icons drawn in code: the app's mark, and the tray's look for each VM state.

Drawn rather than shipped so every size is sharp and the tray's colour always matches the state
table below. packaging/make_icons.py renders the same mark into .png, .ico and .icns.
"""

from __future__ import annotations

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap

COLORS = {
    "running": "#2e9d5b",
    "starting": "#d99a1e",
    "stopped": "#7a7f87",
    "not created": "#7a7f87",
    "degraded": "#d99a1e",
    "error": "#c8372d",
    "unknown": "#7a7f87",
}
BRAND = "#2b6cb0"
SIZES = (16, 22, 24, 32, 48, 64, 128, 256)


def look(state: str) -> str:
    """The tray's look for a VM state: stopped, starting, running or error."""
    if state in ("running",):
        return "running"
    if state in ("starting", "degraded"):
        return "starting"
    if state == "error":
        return "error"
    return "stopped"


def pixmap(size: int, color: str = BRAND, badge: str | None = None) -> QPixmap:
    """The mark: a rounded square holding three stacked containers; an optional state dot."""
    image = QPixmap(size, size)
    image.fill(Qt.GlobalColor.transparent)
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = float(size)
    body = QPainterPath()
    body.addRoundedRect(QRectF(s * 0.04, s * 0.04, s * 0.92, s * 0.92), s * 0.2, s * 0.2)
    p.fillPath(body, QColor(color))
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor("white"))
    box_w, box_h = s * 0.22, s * 0.16
    for col, row in ((0, 1), (1, 1), (2, 1), (0.5, 0), (1.5, 0)):
        x = s * 0.17 + col * (box_w + s * 0.02)
        y = s * 0.34 + row * (box_h + s * 0.04)
        p.drawRoundedRect(QRectF(x, y, box_w, box_h), s * 0.03, s * 0.03)
    if badge is not None:
        r = s * 0.36
        p.setBrush(QColor(badge))
        p.setPen(QPen(QColor("white"), max(1.0, s * 0.05)))
        p.drawEllipse(QRectF(s - r - s * 0.02, s - r - s * 0.02, r, r))
    p.end()
    return image


def app_icon() -> QIcon:
    icon = QIcon()
    for size in SIZES:
        icon.addPixmap(pixmap(size))
    return icon


def state_icon(state: str) -> QIcon:
    """The tray icon: the mark in the state's colour, so it reads at 16 px too."""
    color = COLORS[look(state)]
    icon = QIcon()
    for size in SIZES:
        icon.addPixmap(pixmap(size, color))
    return icon
