"""One message of the engine's stats stream as the Stats tab charts it, computed the way the
docker CLI computes `docker stats`' columns (CPU %, memory without the page cache, block I/O),
and the window of the last minutes that the charts draw."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

WINDOW = 180  # samples kept: three minutes at the stream's one a second


@dataclass(frozen=True)
class Sample:
    cpu_percent: float
    memory_used: int
    memory_limit: int
    block_read: int | None  # None: the engine reports no block I/O for this container
    block_write: int | None
    pids: int


def sample(stats: dict) -> Sample | None:
    """None for a message that carries nothing: a container that is not running."""
    memory = stats.get("memory_stats") or {}
    if "usage" not in memory:
        return None
    read, write = block_io(stats)
    return Sample(
        cpu_percent=cpu_percent(stats),
        memory_used=memory_used(memory),
        memory_limit=int(memory.get("limit") or 0),
        block_read=read,
        block_write=write,
        pids=int((stats.get("pids_stats") or {}).get("current") or 0),
    )


def cpu_percent(stats: dict) -> float:
    """The CLI's formula: the container's share of the machine's CPU time since the previous
    message, times the CPUs (so 200% is two CPUs busy). 0 for the first message."""
    now, before = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    used = _total(now) - _total(before)
    system = int(now.get("system_cpu_usage") or 0) - int(before.get("system_cpu_usage") or 0)
    cpus = (
        now.get("online_cpus") or len((now.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    )
    if used <= 0 or system <= 0 or not _total(before):
        return 0.0
    return used / system * cpus * 100.0


def _total(cpu: dict) -> int:
    return int((cpu.get("cpu_usage") or {}).get("total_usage") or 0)


def memory_used(memory: dict) -> int:
    """Usage less the inactive page cache, as `docker stats` shows it (v1 and v2 keys)."""
    usage, stat = int(memory.get("usage") or 0), memory.get("stats") or {}
    cache = stat.get("total_inactive_file", stat.get("inactive_file", 0)) or 0
    return usage - cache if cache < usage else usage


def block_io(stats: dict) -> tuple[int | None, int | None]:
    """Bytes read and written, summed over devices; None where the engine accounts none
    (an empty list is accounting with no I/O yet)."""
    entries = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive")
    if entries is None:
        return None, None
    totals = {"read": 0, "write": 0}
    for entry in entries:
        op = str(entry.get("op", "")).lower()
        if op in totals:
            totals[op] += int(entry.get("value") or 0)
    return totals["read"], totals["write"]


class History:
    """The last WINDOW samples; a gap (the stream lost, the container stopped) is a None."""

    def __init__(self, size: int = WINDOW) -> None:
        self.samples: deque[Sample | None] = deque(maxlen=size)

    def add(self, item: Sample | None) -> None:
        if item is not None or (self.samples and self.samples[-1] is not None):
            self.samples.append(item)

    def series(self, field: str) -> list[float | None]:
        return [None if s is None else _value(getattr(s, field)) for s in self.samples]

    @property
    def last(self) -> Sample | None:
        return next((s for s in reversed(self.samples) if s is not None), None)


def _value(value) -> float | None:
    return None if value is None else float(value)
