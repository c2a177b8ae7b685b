"""What every bench script needs and nothing more: the standard library only, so that a
timing process importing it loads no test kit (start.py times forks of itself, and every
module loaded here would make each fork dearer than the agent's)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path


def run(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    """Run to completion, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def mounts_below(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    prefix = str(root)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 etc. are octal escapes
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Unmount whatever a tool left mounted below `path`, then delete it."""
    for point in mounts_below(path):
        if run(["umount", point]).returncode != 0:
            run(["umount", "-l", point])
    shutil.rmtree(path, ignore_errors=True)


def cmdline(pid: int) -> bytes:
    """A process's NUL-separated command line, or b"" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def in_workdir(parent: str | None, body: Callable[[Path], None], *guards) -> int:
    """Run `body` in a fresh temp dir under `parent` with `guards` entered; clean up always.
    The exit status: 0, or 130 on Ctrl-C."""
    workdir = Path(tempfile.mkdtemp(prefix="vmctl-bench-", dir=parent)).resolve()
    try:
        with ExitStack() as stack:
            for guard in guards:
                stack.enter_context(guard)
            body(workdir)
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        remove_tree(workdir)
    return 0
