"""Linux capabilities: Docker's default set, names as `--cap-add` takes them, and the drop.

A container keeps 14 capabilities (what Docker grants by default); the bounding set loses the
rest, so not even a setuid binary inside can regain them.
"""

from __future__ import annotations

import functools
from pathlib import Path

from vmctl_agent import syscalls
from vmctl_agent.errors import AgentError

NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip

DOCKER_DEFAULT = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
    "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip


def number(name: str) -> int:
    """`NET_ADMIN`, `CAP_NET_ADMIN` or `net_admin` -> its number."""
    key = name.upper().removeprefix("CAP_")
    if key not in NAMES:
        raise AgentError(f"unknown capability: {name!r}")
    return NAMES.index(key)


@functools.cache
def last_cap() -> int:
    """The highest capability this kernel knows (read once: forks inherit the answer)."""
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except OSError:
        return len(NAMES) - 1


@functools.cache
def available() -> tuple[str, ...]:
    """What `ALL` and `--privileged` grant: every capability this kernel knows that the
    engine's own bounding set still holds (an engine run in a container may lack some, and
    a capability it lacks cannot be handed on)."""
    try:
        status = Path("/proc/self/status").read_text().splitlines()
        bounding = int(next(ln for ln in status if ln.startswith("CapBnd:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        bounding = -1
    return tuple(n for i, n in enumerate(NAMES[: last_cap() + 1]) if bounding >> i & 1)


def resolve(add: tuple[str, ...] = (), drop: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Docker's default set with `--cap-add` / `--cap-drop` applied (`ALL` allowed in both)."""
    wanted = set(DOCKER_DEFAULT)
    if any(n.upper() == "ALL" for n in drop):
        wanted.clear()
    wanted -= {NAMES[number(n)] for n in drop if n.upper() != "ALL"}
    if any(n.upper() == "ALL" for n in add):
        wanted |= set(available())
    wanted |= {NAMES[number(n)] for n in add if n.upper() != "ALL"}
    return tuple(n for n in NAMES if n in wanted)


def mask(names: tuple[str, ...]) -> int:
    bits = 0
    for name in names:
        bits |= 1 << number(name)
    return bits


def drop_bounding(keep: int) -> None:
    """Remove every capability not in `keep` from the bounding set (needs CAP_SETPCAP)."""
    for cap in range(last_cap() + 1):
        if not keep & (1 << cap):
            syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)


def apply(keep: int, *, is_root: bool) -> None:
    """Effective and permitted = `keep` for root, empty for other users (as Docker does);
    inheritable and ambient empty (Docker dropped inheritable after CVE-2022-24769).
    Call after setuid."""
    syscalls.prctl(syscalls.PR_CAP_AMBIENT, syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    bits = keep if is_root else 0
    syscalls.capset(bits, bits, 0)
