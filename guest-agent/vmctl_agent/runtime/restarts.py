"""Restart policies: which ended containers come back, after how long, as dockerd decides.

    no              never
    always          always; a `docker stop` (or kill) holds it down for this life of the agent
                    only: it comes back when the agent starts again, as dockerd's does
    unless-stopped  always, unless the user stopped it (remembered in state.json's
                    `manually_stopped`, so across restarts of the agent and of the VM)
    on-failure[:N]  on a non-zero exit, at most N times in a row (0: no limit)

The delay before each restart starts at 100 ms and doubles, up to a minute; a run that
lasted 10 s resets it. A container waiting out that delay is `restarting`: a status derived
from the pending restart this life of the agent holds (Restarts), never stored.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from vmctl_agent.runtime.spec import InvalidSpec

POLICIES = ("no", "always", "unless-stopped", "on-failure")
FIRST_DELAY = 0.1
MAX_DELAY = 60.0
STEADY_RUN = 10.0  # seconds of running that reset the back-off


@dataclass(frozen=True)
class RestartPolicy:
    name: str = "no"
    maximum_retry_count: int = 0

    def check(self) -> None:
        """Docker's checks and wording (an InvalidSpec: a 400)."""
        name, count = self.name, self.maximum_retry_count
        if name not in POLICIES:
            raise InvalidSpec(
                f"invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', "
                "'on-failure', or 'unless-stopped'"
            )
        if name == "on-failure" and count < 0:
            raise InvalidSpec("invalid restart policy: maximum retry count cannot be negative")
        if name != "on-failure" and count != 0:
            negative = " and cannot be negative" if count < 0 else ""
            raise InvalidSpec(
                "invalid restart policy: maximum retry count can only be used with "
                f"'on-failure'{negative}"
            )

    def wants(self, exit_code: int, restart_count: int, *, stopped: bool, held: bool) -> bool:
        """Restart a container that ended with `exit_code` after `restart_count` restarts?
        `stopped`: the user stopped or killed it (ever); `held`: in this life of the agent."""
        if self.name == "always":
            return not held
        if self.name == "unless-stopped":
            return not stopped and not held
        if self.name == "on-failure":
            limit = self.maximum_retry_count
            under = limit == 0 or restart_count < limit
            return exit_code != 0 and under and not held
        return False

    def inspect(self) -> dict:
        return {"Name": self.name, "MaximumRetryCount": self.maximum_retry_count}


def next_delay(previous: float, ran_for: float) -> float:
    """dockerd's back-off: 100 ms, doubling to a minute; reset by a run of 10 s or more."""
    if ran_for >= STEADY_RUN or previous <= 0:
        return FIRST_DELAY
    return min(previous * 2, MAX_DELAY)


class Restarts:
    """This life of the agent's pending restarts (each cancellable), the back-off reached by
    each container, and the containers held down by a stop or kill."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, threading.Event] = {}
        self._delays: dict[str, float] = {}
        self._held: set[str] = set()
        self._followed: dict[str, str] = {}  # id -> the run whose end is not decided yet

    def following(self, container_id: str, started_at: str) -> None:
        """A watcher follows this run: its end is the watcher's to decide on (restart or not)."""
        with self._lock:
            self._followed[container_id] = started_at

    def deciding(self, container_id: str) -> None:
        """The watcher is deciding on the end it saw: from now, `pending` says the rest."""
        with self._lock:
            self._followed.pop(container_id, None)

    def undecided(self, container_id: str, started_at: str) -> bool:
        """Whether this run's end has not been decided on yet: between the exit, which a wait
        already reports, and the watcher's decision. dockerd decides before it tells anyone."""
        with self._lock:
            return self._followed.get(container_id) == started_at

    def pending(self, container_id: str) -> bool:
        return container_id in self._pending

    def held(self, container_id: str) -> bool:
        return container_id in self._held

    def schedule(self, container_id: str, ran_for: float) -> tuple[float, threading.Event]:
        """Mark a restart pending: its delay, and the event that cancels it."""
        with self._lock:
            delay = next_delay(self._delays.get(container_id, 0.0), ran_for)
            self._delays[container_id] = delay
            cancel = self._pending.setdefault(container_id, threading.Event())
            return delay, cancel

    def done(self, container_id: str) -> None:
        """The pending restart happened, or was given up."""
        with self._lock:
            self._pending.pop(container_id, None)

    def hold(self, container_id: str) -> None:
        """A user's stop or kill: no restart until the next manual start."""
        with self._lock:
            self._held.add(container_id)
            cancel = self._pending.pop(container_id, None)
        if cancel is not None:
            cancel.set()

    def release(self, container_id: str) -> None:
        """A manual start: the back-off and any hold start over."""
        with self._lock:
            self._held.discard(container_id)
            self._delays.pop(container_id, None)

    def forget(self, container_id: str) -> None:
        self.hold(container_id)
        with self._lock:
            self._followed.pop(container_id, None)
            self._held.discard(container_id)
            self._delays.pop(container_id, None)
