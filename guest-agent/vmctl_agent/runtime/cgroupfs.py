"""The values behind a container's cgroup and the cgroup file formats, for cgroups.py.

Limits follow docker's flags and its error wording, so the API layer can pass ImpossibleLimit
messages through as they are; Stats holds what `docker stats` shows. The file helpers read and
write cgroupfs files the way the kernel expects: one write(2) per value, "max" or a value near
2**63 for "no limit".
"""

from __future__ import annotations

import errno
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vmctl_agent import syscalls as sc
from vmctl_agent.errors import CgroupError, ImpossibleLimit

MIN_MEMORY = 6 * 1024 * 1024  # docker's linuxMinMemory
CPU_PERIOD = 100_000  # microseconds; docker --cpus always uses this period
MAX_SHARES = 262_144  # the kernel's v1 cpu.shares range is [2, 2**18]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
V1_NO_LIMIT = 1 << 62  # v1 shows "no limit" as PAGE_COUNTER_MAX pages, just under 2**63


@dataclass(frozen=True)
class Limits:
    """What docker run's --memory, --memory-swap, --memory-swappiness, --oom-kill-disable,
    --cpus, --cpuset-cpus, --cpuset-mems, --pids-limit and --cpu-shares ask for."""

    memory: int | None = None  # bytes; None or 0: unlimited
    cpus: float | None = None  # None: unlimited (docker's NanoCpus=0); else 0.01 up to #CPUs
    pids: int | None = None  # None, 0 or -1: unlimited (docker normalises <= 0 the same)
    cpu_shares: int | None = None  # v1 cpu.shares; None or 0: the default (1024)
    memory_swap: int | None = None  # memory + swap; None or 0: twice memory; -1: unlimited
    swappiness: int | None = None  # v1 memory.swappiness; None (or -1): the kernel's
    oom_kill_disable: bool = False  # v1 memory.oom_control
    cpuset_cpus: str = ""  # "0-1,3"; "": every CPU
    cpuset_mems: str = ""  # memory nodes, likewise

    def check(self, ncpus: int) -> None:
        """Refuse what docker refuses, in its words, before anything is created."""
        if self.memory not in (None, 0) and self.memory < MIN_MEMORY:
            raise ImpossibleLimit("Minimum memory limit allowed is 6MB")
        if self.cpus is not None and not 1000 <= cfs_quota(self.cpus) <= ncpus * CPU_PERIOD:
            raise ImpossibleLimit(
                f"Range of CPUs is from 0.01 to {ncpus}.00, "
                f"as there are only {ncpus} CPUs available"
            )
        if self.pids is not None and self.pids < -1:
            raise ImpossibleLimit(
                f"Invalid PIDs limit {self.pids}: use a positive number, or 0 or -1 for unlimited"
            )
        if self.cpu_shares is not None and self.cpu_shares < 0:
            raise ImpossibleLimit(f"Invalid CPU shares {self.cpu_shares}: must not be negative")
        self._check_memory()
        check_cpuset(self.cpuset_cpus, "cpus", sorted(os.sched_getaffinity(0)))
        check_cpuset(self.cpuset_mems, "mems", memory_nodes())

    def _check_memory(self) -> None:
        swap = self.memory_swap
        if swap is not None and swap > 0 and not self.memory:
            raise ImpossibleLimit(
                "You should always set the Memory limit when using Memoryswap limit, see usage"
            )
        if swap is not None and swap > 0 and swap < self.memory:
            raise ImpossibleLimit(
                "Minimum memoryswap limit should be larger than memory limit, see usage"
            )
        if self.swappiness not in (None, -1) and not 0 <= self.swappiness <= 100:
            raise ImpossibleLimit(
                f"Invalid value: {self.swappiness}, valid memory swappiness range is 0-100"
            )

    @property
    def swap_total(self) -> int:
        """memory + swap to write with a memory limit: -1 unlimited, dockerd's 2x by default."""
        if self.memory_swap == -1:
            return -1
        return self.memory_swap or 2 * (self.memory or 0)

    @property
    def memory_bytes(self) -> int | None:
        return self.memory or None

    @property
    def pids_max(self) -> int | None:
        return self.pids if self.pids is not None and self.pids > 0 else None

    @property
    def shares(self) -> int:
        """cpu.shares clamped to the kernel's range, as the kernel would clamp it anyway."""
        return min(max(self.cpu_shares or 1024, 2), MAX_SHARES)


def check_cpuset(text: str, what: str, available) -> None:
    """A cpuset list ("0-2,4") naming only CPUs (or memory nodes) there are, in dockerd's words."""
    if not text:
        return
    wanted = parse_cpuset(text)
    if wanted is None:
        raise ImpossibleLimit(f"Invalid value {text} for cpuset {what}")
    if not wanted <= set(available):
        names = {"cpus": "CPUs", "mems": "memory nodes"}
        there = cpuset_text(available)
        raise ImpossibleLimit(
            f"Requested {names[what]} are not available - requested {text}, available: {there}"
        )


def parse_cpuset(text: str) -> set[int] | None:
    """The numbers of a cpuset list, or None if it is not one."""
    found: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            return None
        if dash and int(high) < int(low):
            return None
        found |= set(range(int(low), int(high if dash else low) + 1))
    return found


def cpuset_text(numbers) -> str:
    """[0, 1, 2, 5] -> "0-2,5", as the kernel writes a cpuset list."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs)


def memory_nodes() -> list[int]:
    """The machine's online memory nodes (node 0 alone where sysfs does not say)."""
    try:
        text = Path("/sys/devices/system/node/online").read_text().strip()
    except OSError:
        return [0]
    return sorted(parse_cpuset(text) or {0})


def cfs_quota(cpus: float) -> int:
    """cfs quota for `cpus` at CPU_PERIOD, via nano-CPUs exactly as docker converts --cpus."""
    if not math.isfinite(cpus):
        return 0
    return round(cpus * 1e9) * CPU_PERIOD // 10**9


def cpu_weight(shares: int) -> int:
    """v1 shares -> v2 cpu.weight as runc >= 1.3 converts (1024 -> 100, 2 -> 1, 2**18 -> 10000)."""
    if shares <= 2:
        return 1
    if shares >= MAX_SHARES:
        return 10_000
    log = math.log2(shares)
    return math.ceil(10 ** ((log * log + 125 * log) / 612 - 7 / 34))


@dataclass(frozen=True)
class Stats:
    """What `docker stats` shows, read cheaply from the cgroup's files."""

    memory_usage: int  # bytes, page cache included
    memory_limit: int | None  # None: unlimited
    cpu_usage_ns: int  # total CPU time since the cgroup was created
    pids_current: int
    pids_limit: int | None  # None: unlimited
    memory_stat: dict[str, int] = field(default_factory=dict)  # memory.stat as it is
    memory_cache: int = 0  # inactive file pages: docker's CLI subtracts them from usage
    cpu_user_ns: int = 0
    cpu_system_ns: int = 0
    # (major, minor, "read" | "write", bytes) per device; None where the cgroup has no io
    # accounting (the v1 hierarchies we join have no blkio)
    io: tuple[tuple[int, int, str, int], ...] | None = None

    @property
    def memory_used(self) -> int:
        """The MEM USAGE column of `docker stats`: usage minus reclaimable cache."""
        if self.memory_cache < self.memory_usage:
            return self.memory_usage - self.memory_cache
        return self.memory_usage


def check_name(name: str) -> str:
    """Container ids and the parent's name become one path component: nothing may escape."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise CgroupError(f"invalid cgroup name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    return name


def write(path: Path, value: object) -> None:
    """One write(2) of the whole value: the kernel parses each write as one request."""
    data = str(value).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.EIO, "short write")
        finally:
            os.close(fd)
    except OSError as e:
        raise CgroupError(f"cannot write {value!r} to {path}: {e.strerror}") from e


def read(path: Path, default: str = "") -> str:
    """A cgroup file's text; `default` if the cgroup is gone or going (ENODEV mid-rmdir)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return default
    try:
        return sc.read_to_end(fd).decode().strip()
    except OSError as e:
        if e.errno == errno.ENODEV:
            return default
        raise
    finally:
        os.close(fd)


def read_int(path: Path) -> int:
    return int(read(path, "0"))


def read_limit(path: Path) -> int | None:
    """A limit file: "max" (v2), -1 or a near-2**63 value (v1) all mean unlimited."""
    text = read(path, "max")
    return None if text in ("max", "-1") or int(text) >= V1_NO_LIMIT else int(text)


def read_flat(path: Path) -> dict[str, int]:
    """Flat-keyed files such as memory.stat, cpu.stat, memory.events and memory.oom_control."""
    pairs = (line.split() for line in read(path).splitlines())
    return {p[0]: int(p[1]) for p in pairs if len(p) == 2 and p[1].lstrip("-").isdigit()}


def read_io_stat(path: Path) -> tuple[tuple[int, int, str, int], ...] | None:
    """v2's io.stat (`8:0 rbytes=4096 wbytes=0 rios=1 ...` per device) as bytes read and
    written per device; None if the file is missing (no io controller), () before any I/O."""
    if not path.exists():
        return None
    entries = []
    for line in read(path).splitlines():
        device, *pairs = line.split()
        major, minor = (int(n) for n in device.split(":"))
        counts = dict(pair.split("=", 1) for pair in pairs)
        entries += [(major, minor, "read", int(counts.get("rbytes", 0))),
                    (major, minor, "write", int(counts.get("wbytes", 0)))]  # fmt: skip
    return tuple(entries)


def make_dir(path: Path) -> bool:
    """True if we made it; someone else having made it first is fine (concurrent creates)."""
    try:
        path.mkdir()
    except FileExistsError:
        return False
    except OSError as e:
        raise CgroupError(f"cannot create cgroup {path}: {e.strerror}") from e
    return True


def remove_dir(path: Path) -> OSError | None:
    """None once `path` is gone; the error while the kernel still counts tasks (EBUSY)."""
    try:
        path.rmdir()
    except FileNotFoundError:
        return None
    except OSError as e:
        return e
    return None


def host_cpus() -> int:
    """CPUs we may run on: what docker calls NumCPU (the affinity mask, not the machine)."""
    return len(os.sched_getaffinity(0))
