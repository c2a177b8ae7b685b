"""The guest's serial console as a person reads it: the last lines, without the terminal
escape sequences (colours, cursor moves) systemd and getty write."""

from __future__ import annotations

import os
import re
from pathlib import Path

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|[\x00-\x08\x0b-\x1f]")


def tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log (read from its last 64 KiB), printable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    clean = [line.rstrip("\r") for line in text.splitlines()]
    return "\n".join(printable(line) for line in clean[-lines:])


def printable(line: str) -> str:
    return _ESCAPES.sub("", line)
