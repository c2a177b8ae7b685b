"""A container's records on disk, and the rules that keep them whole through crashes.

    config.json   what was asked for: written once, at create, durably (see publish)
    state.json    the last start: pid, shim, times; replaced atomically at each start, not
                  fsynced then (a crash kills every container anyway); none yet: created
    exit.json     how that run ended, written by its shim and naming it (this_runs_end)
    container-json.log   its output (logs.py)

The last three reach the disk before a run's end is first reported (make_end_durable): an
exited container and its logs survive the VM's power being cut.

Readers never see half a file while the machine is up (a temp name and a rename, or a staging
directory published by a rename). What a crash can tear is recognised and dealt with here: a
torn state.json reads as exited, a container whose config.json never reached the disk whole
(its create never returned) is invisible and swept at the next start of the agent.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from vmctl_agent import atomic
from vmctl_agent.store.content import remove_tree

ZERO_TIME = "0001-01-01T00:00:00Z"
LOG = "container-json.log"  # its output, in Docker's json-file format (logs.py)
TOMBSTONE_TTL = 3600
STAGING = ".new-"
_STAGING_TTL = 60.0  # a create takes milliseconds: older staging dirs were left by a crash


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
    and publish it by a rename, durably. config.json is fsynced after the rename: on ext4 that
    one journal commit carries the whole create (two before: config.json's, then the
    rename's); the parent's fsync then costs nothing there, and makes the rename durable
    elsewhere. A crash before they return may leave config.json torn: see read_config."""
    staging, final = root / f"{STAGING}{name}", root / name
    published = None
    staging.mkdir(mode=0o700)
    try:
        for sub in ("upper", "work"):
            (staging / sub).mkdir(mode=0o755)
        atomic.write_new_json(staging / "config.json", config, durable=False)
        staging.rename(final)
        published = final
        atomic.fsync_file(final / "config.json")
        atomic.fsync_dir(root)
    except BaseException:
        remove_tree(published or staging)
        raise


def read_config(directory: Path) -> dict:
    """config.json; FileNotFoundError if the container is gone, or was never whole: a torn
    config.json can only come from a crash during a create that never returned."""
    try:
        data = atomic.read_json(directory / "config.json")
    except ValueError:
        raise FileNotFoundError(directory / "config.json") from None
    if not isinstance(data, dict):
        raise FileNotFoundError(directory / "config.json")
    return data


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


def make_end_durable(directory: Path) -> None:
    """A run's end, once reported (wait, ps, inspect, run's exit code), must survive the VM's
    power being cut: its output, state.json and exit.json, all written unsynced while it ran
    (a crash before its end makes them moot), reach the disk before it is reported."""
    for name in (LOG, "state.json", "exit.json"):
        with contextlib.suppress(FileNotFoundError):  # no output; or removed meanwhile
            atomic.fsync_file(directory / name)
    with contextlib.suppress(FileNotFoundError):
        atomic.fsync_dir(directory)  # exit.json's rename into place


def drop_unnamed_end(directory: Path) -> None:
    """An exit.json from an earlier version names no shim: it would pass for the next run's."""
    ended = atomic.read_json_or_none(directory / "exit.json")
    if ended is not None and "shim" not in ended:
        (directory / "exit.json").unlink(missing_ok=True)


def sweep(root: Path) -> None:
    """What crashes left: staging directories, containers whose create never completed, and
    exit statuses of auto-removed containers past their hour (kept for late `wait`s)."""
    now = time.time()
    for path in root.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if path.name.startswith(STAGING):
                if path.stat().st_mtime < now - _STAGING_TTL:
                    remove_tree(path)
            elif not path.name.startswith(".") and path.is_dir() and _torn(path):
                remove_tree(path)
    for path in (root / ".exits").glob("*.json"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < now - TOMBSTONE_TTL:
                path.unlink()


def _torn(directory: Path) -> bool:
    try:
        read_config(directory)
    except FileNotFoundError:
        return directory.is_dir()  # (not just removed by someone else meanwhile)
    return False
