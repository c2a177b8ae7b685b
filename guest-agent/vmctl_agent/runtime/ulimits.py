"""`--ulimit`: resource limits of the container's first process (and of all it forks), as
dockerd takes them: `[{"Name": "nofile", "Soft": 1024, "Hard": 2048}]`, names as go-units
knows them, checked before anything is made and set just before exec.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence

from vmctl_agent.runtime.spec import InvalidSpec

# Linux's RLIMIT_* numbers (Python's resource module lacks some, such as RLIMIT_LOCKS).
NAMES = {
    "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6, "nofile": 7,
    "memlock": 8, "as": 9, "locks": 10, "sigpending": 11, "msgqueue": 12, "nice": 13,
    "rtprio": 14, "rttime": 15,
}  # fmt: skip

Ulimit = tuple[str, int, int]  # (name, soft, hard); -1: unlimited


def parse(entries: Sequence[dict] | None) -> tuple[Ulimit, ...]:
    """HostConfig.Ulimits, checked: a known name, soft <= hard, each once (the last wins)."""
    found: dict[str, Ulimit] = {}
    for entry in entries or ():
        if not isinstance(entry, dict):
            raise InvalidSpec(f"invalid ulimit: {entry!r}")
        name, soft, hard = entry.get("Name"), entry.get("Soft"), entry.get("Hard")
        if name not in NAMES:
            raise InvalidSpec(f"invalid ulimit type: {name}")
        if not isinstance(soft, int) or not isinstance(hard, int):
            raise InvalidSpec(f"invalid ulimit value for {name}: soft and hard must be integers")
        if hard != -1 and (soft == -1 or soft > hard):
            raise InvalidSpec(
                f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )
        found[name] = (name, soft, hard)
    return tuple(found.values())


def inspect(limits: Sequence[Ulimit]) -> list[dict]:
    """HostConfig.Ulimits as dockerd shows it."""
    return [{"Name": n, "Hard": h, "Soft": s} for n, s, h in limits]


def apply(limits: Sequence[Ulimit]) -> None:
    """In the container's first process, before exec (root may raise a hard limit)."""
    for name, soft, hard in limits:
        infinity = resource.RLIM_INFINITY
        soft, hard = (infinity if v == -1 else v for v in (soft, hard))
        resource.setrlimit(NAMES[name], (soft, hard))
