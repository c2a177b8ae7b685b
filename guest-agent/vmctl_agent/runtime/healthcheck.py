"""Healthchecks as dockerd runs them: the check (the image's HEALTHCHECK under `docker run`'s
--health-* options), checked once at create, and the health a run's results add up to.

    starting   until the first success (failures inside the start period do not count)
    healthy    after a success
    unhealthy  after `retries` failures in a row

Pure: the probes themselves are run by probes.py, as execs in the container.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmctl_agent.runtime import logs
from vmctl_agent.runtime.spec import InvalidSpec

NS = 10**9
DEFAULTS = {"Interval": 30 * NS, "Timeout": 30 * NS, "StartPeriod": 0, "StartInterval": 5 * NS}
DEFAULT_RETRIES = 3
MINIMUM = 10**6  # ns: dockerd's MinimumDuration, 1ms
KEPT_RESULTS = 5
MAX_OUTPUT = 4096
STATUSES = ("starting", "healthy", "unhealthy", "none")


@dataclass(frozen=True)
class Healthcheck:
    """The check a container runs, durations in seconds."""

    command: tuple[str, ...]
    interval: float
    timeout: float
    start_period: float
    start_interval: float
    retries: int

    def wait_before_next(self, status: str, running_for: float) -> float:
        """Within the start period, until the first success, probes come every start interval."""
        if running_for < self.start_period and status == "starting":
            return self.start_interval
        return self.interval


def check_options(asked: dict | None) -> None:
    """`docker run`'s Healthcheck, as dockerd checks it at create (its wording)."""
    if not asked:
        return
    for key in ("Interval", "Timeout", "StartPeriod", "StartInterval"):
        value = asked.get(key) or 0
        if not isinstance(value, int):
            raise InvalidSpec(f"Healthcheck.{key} must be an integer number of nanoseconds")
        if value != 0 and value < MINIMUM:
            raise InvalidSpec(f"{key} in Healthcheck cannot be less than 1ms")
    if (asked.get("Retries") or 0) < 0:
        raise InvalidSpec("Retries in Healthcheck cannot be negative")
    _command(asked.get("Test") or [])


DEFAULT_SHELL = ("/bin/sh", "-c")


def merge(
    asked: dict | None, image: dict | None, shell: list[str] | None = None
) -> Healthcheck | None:
    """The container's check over the image's, field by field, as dockerd merges them; None
    for no check at all (none anywhere, or `NONE`: --no-healthcheck). CMD-SHELL runs in
    `shell` (Config.Shell, e.g. from the Dockerfile's SHELL), else /bin/sh -c."""
    asked, image = asked or {}, image or {}
    test = asked.get("Test") or image.get("Test") or []
    command = _command(test, tuple(shell or DEFAULT_SHELL))
    if not command:
        return None

    def pick(key: str) -> float:
        return (asked.get(key) or image.get(key) or DEFAULTS[key]) / NS

    retries = asked.get("Retries") or image.get("Retries") or DEFAULT_RETRIES
    return Healthcheck(
        command,
        pick("Interval"),
        pick("Timeout"),
        pick("StartPeriod"),
        pick("StartInterval"),
        retries,
    )


def _command(test: list, shell: tuple[str, ...] = DEFAULT_SHELL) -> tuple[str, ...]:
    if not isinstance(test, list) or not all(isinstance(t, str) for t in test):
        raise InvalidSpec("Healthcheck.Test must be a list of strings")
    if not test or test[0] == "NONE":
        return ()
    if test[0] == "CMD" and len(test) > 1:
        return tuple(test[1:])
    if test[0] == "CMD-SHELL" and len(test) > 1:
        return (*shell, " ".join(test[1:]))
    raise InvalidSpec(
        f"unknown healthcheck type '{test[0]}' (expected one of NONE, CMD, CMD-SHELL, "
        "each followed by a command)"
    )


@dataclass
class Health:
    """One run's health: State.Health of `docker inspect`; `run` names the run (its start)."""

    run: str
    status: str = "starting"
    failing_streak: int = 0
    log: list[dict] = field(default_factory=list)

    def add(self, result: dict, check: Healthcheck) -> bool:
        """Count a probe's result; True if the status changed (an event to publish)."""
        before = self.status
        self.log = [*self.log, result][-KEPT_RESULTS:]
        if result["ExitCode"] == 0:
            self.failing_streak, self.status = 0, "healthy"
        elif not self._in_start_period(result, check):
            self.failing_streak += 1
            if self.failing_streak >= check.retries:
                self.status = "unhealthy"
        return self.status != before

    def _in_start_period(self, result: dict, check: Healthcheck) -> bool:
        since_start = logs.parse_time(result["Start"]) - logs.parse_time(self.run)
        return self.status == "starting" and since_start < check.start_period

    def to_json(self) -> dict:
        return {
            "run": self.run,
            "Status": self.status,
            "FailingStreak": self.failing_streak,
            "Log": self.log,
        }

    @classmethod
    def from_json(cls, data: dict) -> Health:
        return cls(data["run"], data["Status"], int(data["FailingStreak"]), list(data["Log"]))

    def inspect(self) -> dict:
        return {"Status": self.status, "FailingStreak": self.failing_streak, "Log": self.log}


def timeout_text(seconds: float) -> str:
    """A duration as Go prints it, for dockerd's "Health check exceeded timeout (30s)"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    text = f"{rest:g}s"
    if minutes or hours:
        text = f"{minutes}m{text}"
    return f"{hours}h{text}" if hours else text
