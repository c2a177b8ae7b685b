"""A build's own directory under `<data-root>/builds/`, named after the agent that owns it
(`<pid>-<random>`), and the sweep that removes what a killed agent left there: its
workspaces, anything still mounted below them, and the step containers they list (a RUN's
container outlives an agent killed mid-step, its shim still running).

A live agent's workspaces are its own business; the sweep takes only those whose owner is
gone, or, when the agent starts, those that name its own pid (a reused pid).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from vmctl_agent import syscalls as sc
from vmctl_agent.errors import AgentError
from vmctl_agent.runtime.containers import Runtime
from vmctl_agent.store.content import remove_tree

_STEPS = "steps"  # a file per step container made, named by its id
_OCTAL = re.compile(r"\\([0-7]{3})")


def create(builds: Path) -> Path:
    """A new, empty workspace owned by this process."""
    builds.mkdir(exist_ok=True)
    workspace = builds / f"{os.getpid()}-{os.urandom(6).hex()}"
    workspace.mkdir()
    (workspace / _STEPS).mkdir()
    return workspace


def note_step(workspace: Path, container_id: str) -> None:
    """Remember a step container, so a sweep after a crash can remove it."""
    (workspace / _STEPS / container_id).touch()


def sweep(builds: Path, runtime: Runtime, *, starting: bool = False) -> list[Path]:
    """Remove the workspaces of agents that are gone (with `starting`, also those naming
    this process's pid, which no build of this process can own yet); those removed."""
    if not builds.is_dir():
        return []
    stale = [w for w in sorted(builds.iterdir()) if _stale(w.name, starting)]
    for workspace in stale:
        remove(workspace, runtime)
    return stale


def remove(workspace: Path, runtime: Runtime) -> None:
    """A dead build's workspace: its step containers, then its mounts, then its files."""
    steps = workspace / _STEPS
    for container_id in sorted(os.listdir(steps)) if steps.is_dir() else []:
        with contextlib.suppress(AgentError, OSError):
            runtime.remove(container_id, force=True)
    unmount_below(workspace)
    remove_tree(workspace)


def unmount_below(path: Path) -> None:
    """Detach every mount at or below `path`, deepest first: deleting files through a mount
    would delete what it shows (a layer, a host folder)."""
    real = os.path.realpath(path)
    found = [p for p in mount_points() if p == real or p.startswith(real + "/")]
    for point in sorted(found, key=lambda p: -p.count("/")):
        with contextlib.suppress(FileNotFoundError):
            sc.umount(point, sc.MNT_DETACH)


def mount_points() -> list[str]:
    """The mount points this process sees (mountinfo escapes space, tab, newline, `\\`)."""
    with open("/proc/self/mountinfo", "rb") as f:
        fields = [os.fsdecode(line.split(b" ")[4]) for line in f]
    return [_OCTAL.sub(lambda m: chr(int(m[1], 8)), field) for field in fields]


def _stale(name: str, starting: bool) -> bool:
    pid = name.partition("-")[0]
    if not pid.isdigit():
        return True
    return (starting and int(pid) == os.getpid()) or not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
