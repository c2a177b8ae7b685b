"""The app's own preferences (not the VM's: those are vm.json, through vmctl.config).

Kept in `$VMCTL_HOME/desktop.json`, written atomically, so tests relocate them with VMCTL_HOME
and a crash never leaves half a file. A broken file is set aside, not fatal: preferences are
not worth refusing to start over.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from vmctl_gui.engine import RunRequest

from vmctl import atomic
from vmctl import paths as vmpaths

RECENT_RUNS = 5


@dataclass(frozen=True)
class Prefs:
    start_minimized: bool = False
    recent_runs: tuple[RunRequest, ...] = field(default_factory=tuple)

    def remember(self, run: RunRequest) -> Prefs:
        """The run first, without an older copy of itself, at most RECENT_RUNS kept."""
        others = tuple(r for r in self.recent_runs if r != run)
        return dataclasses.replace(self, recent_runs=(run, *others)[:RECENT_RUNS])


def path():
    return vmpaths.home() / "desktop.json"


def load() -> Prefs:
    try:
        raw = json.loads(path().read_text())
        runs = tuple(
            RunRequest(
                image=str(r["image"]),
                command=tuple(map(str, r.get("command", ()))),
                env=tuple(map(str, r.get("env", ()))),
                ports=tuple(map(str, r.get("ports", ()))),
                folders=tuple(map(str, r.get("folders", ()))),
            )
            for r in raw.get("recent_runs", [])
        )
        return Prefs(bool(raw.get("start_minimized", False)), runs[:RECENT_RUNS])
    except FileNotFoundError:
        return Prefs()
    except (ValueError, TypeError, KeyError, AttributeError):
        broken = path()
        broken.replace(broken.with_suffix(".json.broken"))
        return Prefs()


def save(prefs: Prefs) -> None:
    data = {
        "start_minimized": prefs.start_minimized,
        "recent_runs": [dataclasses.asdict(r) for r in prefs.recent_runs],
    }
    path().parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path(), json.dumps(data, indent=1) + "\n")
