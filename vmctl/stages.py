"""The stages of a start, each with a bounded wait, so a start either finishes or says which
stage failed and shows the tail of the guest's console: never "stuck starting"."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from vmctl import console, locks
from vmctl import paths as vmpaths
from vmctl.errors import VmctlError
from vmctl.machine import Driver

Progress = Callable[[str], None]
T = TypeVar("T")

# Bounded waits per stage, measured under TCG (software emulation, the slowest case): a first
# boot with cloud-init answers SSH in ~55 s and finishes cloud-init in ~75 s.
TIMEOUTS = {"hypervisor": 60.0, "ssh": 300.0, "cloud-init": 300.0, "deploy": 180.0, "engine": 120.0}
STAGES = tuple(TIMEOUTS)
CONSOLE_TAIL = 25  # lines of the serial console shown when a stage fails


class StageFailed(VmctlError):
    """A start stage did not finish: which, why, and what the guest's console said."""

    def __init__(self, name: str, stage: str, reason: str, console: str) -> None:
        self.stage = stage
        self.reason = reason
        self.console = console
        tail = "\n".join("  " + line for line in console.splitlines()) or "  (empty)"
        super().__init__(
            f"VM {name!r} failed to start at stage '{stage}': {reason}\n"
            f"last lines of the VM's console:\n{tail}\n"
            f"(more: vmctl logs --name {name}; debug: vmctl ssh --name {name})"
        )


def enter(paths: vmpaths.VMPaths, stage: str, say: Progress) -> None:
    """Record the stage (`vmctl status` shows it while starting) and say it; "" when done."""
    locks.record_stage(paths, stage)
    if stage:
        say(f"[{STAGES.index(stage) + 1}/{len(STAGES)}] {stage}")


def run(
    paths: vmpaths.VMPaths,
    driver: Driver,
    stage: str,
    step: Callable[[], T],
    check_alive: bool = True,
) -> T:
    """`step()`, its error turned into StageFailed with the console's tail (and whether the
    hypervisor died, which is often the reason)."""
    try:
        return step()
    except StageFailed:
        raise
    except VmctlError as e:
        reason = str(e)
        if check_alive and not driver.is_running():
            reason += " (the VM's hypervisor is no longer running)"
        raise StageFailed(
            paths.name, stage, reason, console.tail(paths.serial_log, CONSOLE_TAIL)
        ) from None
