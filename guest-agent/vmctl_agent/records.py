"""A container's records on disk, and the rules that keep them whole through crashes.

    config.json   what was asked for: written once, at create, durably
    state.json    the last start: pid, shim, times; replaced atomically at each start, not
                  fsynced (after a crash every container is dead anyway); none yet: created
    exit.json     how that run ended, written by its shim and naming it (this_runs_end)

Readers never see half a file while the machine is up (a temp name and a rename, or a staging
directory published by a rename); a state.json torn by a crash reads as exited.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from vmctl_agent import atomic
from vmctl_agent.content import remove_tree

ZERO_TIME = "0001-01-01T00:00:00Z"
TOMBSTONE_TTL = 3600
STAGING = ".new-"


@dataclass
class State:
    status: str = "created"
    pid: int = 0
    start_time: int = 0
    shim_pid: int = 0
    shim_start_time: int = 0
    started_at: str = ZERO_TIME
    finished_at: str = ZERO_TIME
    exit_code: int = 0
    oom_killed: bool = False
    error: str = ""
    restart_count: int = 0

    @property
    def running(self) -> bool:
        return self.status == "running"


def publish(root: Path, name: str, config: dict) -> None:
    """Make container directory `root/name` (upper/, work/, config.json) under a staging name
    and publish it by a rename, durably: three fsyncs (config.json, the staging directory,
    the parent)."""
    staging = root / f"{STAGING}{name}"
    staging.mkdir(mode=0o700)
    try:
        for sub in ("upper", "work"):
            (staging / sub).mkdir(mode=0o755)
        atomic.write_new_json(staging / "config.json", config)
        atomic.fsync_dir(staging)
        staging.rename(root / name)
        atomic.fsync_dir(root)
    except BaseException:
        remove_tree(staging)
        raise


def read_config(directory: Path) -> dict:
    """config.json (FileNotFoundError if the container is gone)."""
    return atomic.read_json(directory / "config.json")


def read_state(directory: Path) -> State:
    """state.json; none yet means never started (FileNotFoundError if the container is gone)."""
    try:
        return State(**atomic.read_json(directory / "state.json"))
    except FileNotFoundError:
        if not (directory / "config.json").exists():
            raise  # removed (or renamed away for removal) meanwhile
        return State()
    except (ValueError, TypeError):
        return State(status="exited", exit_code=255, error="state lost in a crash of the VM")


def this_runs_end(directory: Path, state: State) -> dict | None:
    """exit.json, if its shim is this run's: a start leaves the last run's end in place (were
    it removed first, a reader meanwhile would take the last run's dead shim for a killed one
    and stop the container being started)."""
    ended = atomic.read_json_or_none(directory / "exit.json")
    if ended is None or "shim" not in ended:
        return ended  # (unnamed: written by an agent of an earlier version)
    ours = ended["shim"] == state.shim_pid and ended["shim_start_time"] == state.shim_start_time
    return ended if ours else None


def drop_unnamed_end(directory: Path) -> None:
    """An exit.json from an earlier version names no shim: it would pass for the next run's."""
    ended = atomic.read_json_or_none(directory / "exit.json")
    if ended is not None and "shim" not in ended:
        (directory / "exit.json").unlink(missing_ok=True)


def prune_tombstones(directory: Path) -> None:
    """Exit statuses of auto-removed containers are kept an hour for late `wait`s and events."""
    cutoff = time.time() - TOMBSTONE_TTL
    for path in directory.glob("*.json"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
