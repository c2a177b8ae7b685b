"""A progress bar for long copies and builds on a terminal (one redrawn line), or one line
per update where the output is not a terminal (logs, pipes)."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


class ProgressBar:
    """A one-line progress display on stderr for `vmctl image build` and a first `vmctl start`:
    usable as a download callback (`update(done, total)`) and a build callback (`message`).
    On a terminal it redraws one line; elsewhere it prints a line per message or per 10%."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label, self.width = label, width
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._last, self._shown = 0.0, -1

    def update(self, done: int, total: int | None) -> None:
        step = done * 10 // total if total else done >> 26
        now = time.monotonic()
        if self.tty and (now - self._last >= 0.1 or done == total):
            self._draw(render(self.label, done, total, self.width))
            self._last = now
        elif not self.tty and step != self._shown:
            self.stream.write(render(self.label, done, total, self.width) + "\n")
            self._shown = step

    __call__ = update

    def message(self, text: str) -> None:
        line = f"{self.label}: {text}"
        if self.tty:
            self._draw(line)
        else:
            self.stream.write(line + "\n")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def _draw(self, line: str) -> None:
        columns = shutil.get_terminal_size().columns - 1
        self.stream.write("\r" + line[:columns].ljust(columns))
        self.stream.flush()


def render(label: str, done: int, total: int | None, width: int = 30) -> str:
    """`label [#######-------]  45%  123.4/274.0 MiB` (no bar when the size is unknown)."""
    mib = f"{done / (1 << 20):.1f}"
    if not total:
        return f"{label}  {mib} MiB"
    filled = min(width, done * width // total)
    bar = "#" * filled + "-" * (width - filled)
    return f"{label} [{bar}] {done * 100 // total:3d}%  {mib}/{total / (1 << 20):.1f} MiB"
