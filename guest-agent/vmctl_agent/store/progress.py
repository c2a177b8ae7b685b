"""Pull progress as Docker's JSON messages, so the Engine API can stream them unchanged.

The callback gets dicts like `{"status": "Downloading", "id": "a1b2c3d4e5f6",
"progressDetail": {"current": 1024, "total": 4096}, "progress": "[=====>   ] 1.02kB/4.1kB"}`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Progress = Callable[[dict], None]
_BAR = 50
_INTERVAL = 0.1


def message(
    status: str, id: str | None = None, current: int | None = None, total: int | None = None
) -> dict:
    msg: dict = {"status": status}
    if id is not None:
        msg["id"] = id
    if current is not None:
        msg["progressDetail"] = {"current": current, "total": total or 0}
        msg["progress"] = bar(current, total)
    return msg


def short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def human(n: float) -> str:
    """Sizes as docker prints them (decimal units)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}GB"


def bar(current: int, total: int | None) -> str:
    if not total:
        return human(current)
    filled = min(_BAR, _BAR * current // total)
    arrow = "=" * max(filled - 1, 0) + (">" if filled < _BAR else "=")
    return f"[{arrow:<{_BAR}}] {human(current)}/{human(total)}"


class Throttled:
    """Reports byte counts for one layer at most every 100 ms (and always the last one)."""

    def __init__(self, emit: Progress, status: str, id: str, total: int) -> None:
        self._emit = emit
        self._status = status
        self._id = id
        self._total = total
        self._current = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        self._current += n
        now = time.monotonic()
        if now - self._last >= _INTERVAL or self._current >= self._total:
            self._last = now
            with self._lock:
                self._emit(message(self._status, self._id, self._current, self._total))
