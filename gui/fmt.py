"""Numbers and times the way `docker images` and `docker ps` print them."""

from __future__ import annotations

import time


def size(n: int) -> str:
    """Decimal units, as the docker CLI prints sizes (1000, not 1024)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{n}B"  # pragma: no cover


def ago(when: int, now: float | None = None) -> str:
    """'3 minutes ago', like the CLI's CREATED column."""
    seconds = max(0, int((now if now is not None else time.time()) - when))
    for unit, length in (("year", 31536000), ("month", 2592000), ("week", 604800),
                         ("day", 86400), ("hour", 3600), ("minute", 60)):  # fmt: skip
        if seconds >= length:
            count = seconds // length
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "Less than a minute ago" if seconds >= 1 else "Just now"


def short_id(image_or_container_id: str) -> str:
    return image_or_container_id.removeprefix("sha256:")[:12]
