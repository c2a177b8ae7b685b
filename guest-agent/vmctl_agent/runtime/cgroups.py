"""A container's cgroup: create with limits, join, read stats, detect OOM kills, kill, remove.

One interface, two implementations, picked by `detect()`:

    CgroupsV2   the VM guest: the unified hierarchy, <root>/<parent>/<name>, a leaf
    CgroupsV1   older hosts: <hierarchy>/<parent>/<name> in each of memory, cpu, cpuacct,
                pids, freezer and cpuset (co-mounted hierarchies count once)

Limits and Stats (defined in cgroupfs.py, exported here) follow docker's flags and wording.
A Limits field that is None means "no limit" and is written as the kernel default, so calling
create() again on an existing cgroup also resets what was dropped.

The runtime puts a child in before it execs, so nothing runs unlimited even briefly: either the
child calls `join(name)` between fork and exec (where `joins_itself`: v1), or its parent calls
`add(name, pid)` while the child waits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path

from vmctl_agent.errors import CgroupError
from vmctl_agent.runtime.cgroupfs import (
    CPU_PERIOD,
    Limits,
    Stats,
    cfs_quota,
    check_name,
    cpu_weight,
    host_cpus,
    make_dir,
    read,
    read_flat,
    read_int,
    read_io_stat,
    read_limit,
    remove_dir,
    write,
)

__all__ = ["Cgroups", "CgroupsV1", "CgroupsV2", "Limits", "Stats", "detect"]

V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer", "cpuset")
V2_CONTROLLERS = ("memory", "pids", "cpu", "io", "cpuset")
_FREEZE_WAIT = 1.0


class Cgroups(ABC):
    """The runtime's view of container cgroups; `name` is always a container id."""

    version: int
    joins_itself: bool  # whether a child should join() rather than wait to be add()ed

    def __init__(self, parent: str) -> None:
        self.parent = check_name(parent)

    @abstractmethod
    def path(self, name: str) -> tuple[Path, ...]:
        """The container's cgroup directories: one on v2, one per hierarchy on v1.

        A child that must be inside before it execs (so nothing escapes the limits) writes
        "0" (meaning itself) to cgroup.procs in each, which is what `add(name, 0)` does.
        """

    @abstractmethod
    def _make(self, name: str) -> list[Path]:
        """Create the parent and the leaf; return the directories this call created."""

    @abstractmethod
    def _apply(self, name: str, limits: Limits, fresh: bool) -> None:
        """Write the limits; `fresh`: this call made the leaf, so it holds the defaults."""

    @abstractmethod
    def stats(self, name: str) -> Stats: ...

    @abstractmethod
    def oom_killed(self, name: str) -> bool:
        """Whether the kernel's OOM killer has killed anything in the container."""

    @abstractmethod
    def _kill(self, name: str, sig: int) -> None: ...

    @abstractmethod
    def freeze(self, name: str) -> None:
        """`docker pause`: stop every process inside until thaw(); returns once frozen."""

    @abstractmethod
    def thaw(self, name: str) -> None: ...

    @abstractmethod
    def frozen(self, name: str) -> bool:
        """Whether the container is paused, as the kernel's freezer says."""

    def create(self, name: str, limits: Limits) -> None:
        """Idempotent; on failure, removes whatever this call created."""
        check_name(name)
        limits.check(host_cpus())
        created = self._make(name)
        try:
            self._apply(name, limits, fresh=len(created) == len(self.path(name)))
        except BaseException:
            for d in reversed(created):
                remove_dir(d)
            raise

    def exists(self, name: str) -> bool:
        return any(d.is_dir() for d in self.path(name))

    def add(self, name: str, pid: int) -> None:
        """Move `pid` (0: the caller) into the container's cgroup in every hierarchy."""
        if pid < 0:
            raise CgroupError(f"invalid pid {pid}")
        for d in self.path(name):
            write(d / "cgroup.procs", pid)

    def join(self, name: str) -> None:
        """Move the caller, a single-threaded process, into the container's cgroup."""
        self.add(name, 0)

    def procs(self, name: str) -> list[int]:
        """Processes inside (zombies are not listed); none if the cgroup does not exist."""
        pids = {int(p) for d in self.path(name) for p in read(d / "cgroup.procs").split()}
        return sorted(pids)

    def kill_all(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal every process inside, including ones forked while we do it. The shim may
        be removing the cgroup meanwhile (the container died, and an exec joined it late):
        then whoever is left in the hierarchies still there is signalled one by one."""
        if self.exists(name):
            try:
                self._kill(name, sig)
            except CgroupError:
                self._signal_each(name, sig)

    def remove(self, name: str, timeout: float = 5.0) -> None:
        """Kill what is left and remove the cgroup everywhere; a missing cgroup is fine.

        rmdir fails with EBUSY until the kernel has finished tearing down killed tasks, so
        this retries until `timeout`, then raises CgroupError naming what remains. Usually
        nothing is left (a PID namespace dies with its PID 1): the first rmdir just works.
        """
        deadline = time.monotonic() + timeout
        while True:
            errors = [(d, e) for d in self.path(name) if (e := remove_dir(d)) is not None]
            if not errors:
                return
            if time.monotonic() > deadline:
                d, e = errors[0]
                left = self.procs(name)
                raise CgroupError(f"cannot remove cgroup {d}: {e.strerror}; processes left: {left}")
            if self.procs(name):
                self.kill_all(name)
            time.sleep(0.01)

    def _signal_each(self, name: str, sig: int) -> None:
        for pid in self.procs(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


class CgroupsV2(Cgroups):
    """The unified hierarchy: containers are leaves of <root>/<parent>.

    The parent sits directly under the root, not under the agent's own cgroup: a cgroup with
    processes in it cannot delegate controllers to children ("no internal processes"), and
    the containers must outlive the agent. The root tree may be a fake directory in tests.
    """

    version = 2
    joins_itself = False  # the parent add()s meanwhile: the kernel's wait overlaps the set-up

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), parent: str = "vmctl") -> None:
        super().__init__(parent)
        self.root = root
        available = set(read(root / "cgroup.controllers").split())
        self.controllers = [c for c in V2_CONTROLLERS if c in available]

    def path(self, name: str) -> tuple[Path, ...]:
        return (self.root / self.parent / check_name(name),)

    def _make(self, name: str) -> list[Path]:
        enable = " ".join(f"+{c}" for c in self.controllers)
        parent = self.root / self.parent
        if enable:
            write(self.root / "cgroup.subtree_control", enable)
        make_dir(parent)
        if enable:
            write(parent / "cgroup.subtree_control", enable)
        (leaf,) = self.path(name)
        return [leaf] if make_dir(leaf) else []

    def _apply(self, name: str, limits: Limits, fresh: bool) -> None:
        """Check every controller first, so a refusal leaves the leaf empty to roll back."""
        (d,) = self.path(name)
        writes = [(f, v) for f, v, limited in self._plan(d, limits) if self._usable(f, limited)]
        for file, value in writes:
            write(d / file, value)

    @staticmethod
    def _plan(d: Path, limits: Limits) -> list[tuple[str, object, bool]]:
        """(file, value, whether it limits anything) for each file create() writes."""
        memory, pids, cpus = limits.memory_bytes, limits.pids_max, limits.cpus
        quota = cfs_quota(cpus) if cpus is not None else "max"
        plan = [
            ("memory.max", memory or "max", memory is not None),
            ("cpu.max", f"{quota} {CPU_PERIOD}", cpus is not None),
            ("cpu.weight", cpu_weight(limits.shares), bool(limits.cpu_shares)),
            ("pids.max", pids or "max", pids is not None),
        ]
        if (d / "memory.swap.max").exists():  # swap accounting on: memory+swap, 2x by default
            swap = limits.swap_total - memory if memory and limits.swap_total > 0 else "max"
            plan.insert(1, ("memory.swap.max", swap, bool(memory and limits.memory_swap)))
        cpusets = (("cpuset.cpus", limits.cpuset_cpus), ("cpuset.mems", limits.cpuset_mems))
        return plan + [(file, value, True) for file, value in cpusets if value]

    def _usable(self, file: str, limited: bool) -> bool:
        """Whether to write `file`; asking for a limit whose controller is off is an error."""
        controller = file.split(".", 1)[0]
        if controller in self.controllers:
            return True
        if limited:
            raise CgroupError(f"cannot limit {controller}: the {controller} controller is off")
        return False

    def stats(self, name: str) -> Stats:
        (d,) = self.path(name)
        if not d.is_dir():
            raise CgroupError(f"no cgroup for container {name}")
        memory_stat, cpu = read_flat(d / "memory.stat"), read_flat(d / "cpu.stat")
        return Stats(
            memory_usage=read_int(d / "memory.current"),
            memory_limit=read_limit(d / "memory.max"),
            cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
            pids_current=read_int(d / "pids.current"),
            pids_limit=read_limit(d / "pids.max"),
            memory_stat=memory_stat,
            memory_cache=memory_stat.get("inactive_file", 0),
            cpu_user_ns=cpu.get("user_usec", 0) * 1000,
            cpu_system_ns=cpu.get("system_usec", 0) * 1000,
            io=read_io_stat(d / "io.stat") if "io" in self.controllers else None,
        )

    def oom_killed(self, name: str) -> bool:
        return read_flat(self.path(name)[0] / "memory.events").get("oom_kill", 0) > 0

    def freeze(self, name: str) -> None:
        (d,) = self.path(name)
        write(d / "cgroup.freeze", 1)
        deadline = time.monotonic() + _FREEZE_WAIT
        while read_flat(d / "cgroup.events").get("frozen", 1) != 1:
            if time.monotonic() > deadline:
                write(d / "cgroup.freeze", 0)
                raise CgroupError(f"cannot freeze {d}: its processes did not stop")
            time.sleep(0.001)

    def thaw(self, name: str) -> None:
        write(self.path(name)[0] / "cgroup.freeze", 0)

    def frozen(self, name: str) -> bool:
        return read(self.path(name)[0] / "cgroup.freeze") == "1"

    def _kill(self, name: str, sig: int) -> None:
        """cgroup.kill (Linux 5.14+) kills atomically, forks included; else one pass of kill(2)."""
        kill = self.path(name)[0] / "cgroup.kill"
        if sig == signal.SIGKILL and kill.exists():
            write(kill, 1)
        else:
            self._signal_each(name, sig)


class CgroupsV1(Cgroups):
    """One directory per hierarchy, <hierarchy>/<parent>/<name>, the same name in each.

    The parent sits directly under each hierarchy's root, not under the agent's own cgroup:
    v1 places a process separately in every hierarchy (here the agent may sit in a nested
    memory cgroup but at the root of the others), so the only placement that is the same in
    all of them is the root; and containers must not share the agent's limits or die with it.
    """

    version = 1
    joins_itself = True

    def __init__(self, roots: Mapping[str, Path], parent: str = "vmctl") -> None:
        super().__init__(parent)
        missing = [c for c in V1_CONTROLLERS if c not in roots]
        if missing:
            raise CgroupError(f"cgroup v1 hierarchies not mounted: {', '.join(missing)}")
        self.roots = {c: roots[c] for c in V1_CONTROLLERS}
        unique = {p.resolve(): p for p in self.roots.values()}  # co-mounted "cpu,cpuacct"
        self.hierarchies = tuple(unique.values())

    def path(self, name: str) -> tuple[Path, ...]:
        check_name(name)
        return tuple(h / self.parent / name for h in self.hierarchies)

    def _dir(self, controller: str, name: str) -> Path:
        return self.roots[controller] / self.parent / name

    def join(self, name: str) -> None:
        """Through `tasks`, as the thread itself: a write to cgroup.procs takes the kernel's
        global threadgroup lock, which waits for an RCU grace period (~7 ms here, more than
        all of a container's set-up); moving only the caller's own thread skips it (Linux
        5.19+). For a single-threaded process, as a freshly forked child is, that is all of it."""
        for d in self.path(name):
            write(d / "tasks", 0)

    def _make(self, name: str) -> list[Path]:
        for h in self.hierarchies:
            if not (h / self.parent).is_dir():
                self._make_parent(h)
        created: list[Path] = []
        try:
            for d in self.path(name):
                if make_dir(d):
                    created.append(d)
            self._inherit_cpuset(self._dir("cpuset", name))  # done by clone_children, normally
        except BaseException:
            for d in created:
                remove_dir(d)
            raise
        return created

    def _make_parent(self, hierarchy: Path) -> None:
        """Under the root; the cpuset parent hands its CPUs and nodes to each new child itself."""
        make_dir(hierarchy / self.parent)
        if hierarchy == self.roots["cpuset"]:
            self._inherit_cpuset(hierarchy / self.parent)
            write(hierarchy / self.parent / "cgroup.clone_children", 1)

    @staticmethod
    def _inherit_cpuset(d: Path) -> None:
        """A new v1 cpuset starts empty and refuses tasks: copy the parent's CPUs and nodes."""
        for file in ("cpuset.cpus", "cpuset.mems"):
            if not read(d / file):
                write(d / file, read(d.parent / file))

    def _apply(self, name: str, limits: Limits, fresh: bool) -> None:
        """A fresh leaf holds the kernel's defaults, which are what "no limit" means: only
        limits are written to it. An old one gets every file, so dropped limits are reset."""
        for path, value, limited in self._plan(name, limits, fresh):
            if limited or not fresh:
                write(path, value)

    def _plan(self, name: str, limits: Limits, fresh: bool) -> list[tuple[Path, object, bool]]:
        """(file, value, whether it limits anything), in an order the kernel accepts."""
        memory, cpus, pids = limits.memory_bytes, limits.cpus, limits.pids_max
        mem, cpu = self._dir("memory", name), self._dir("cpu", name)
        memsw = mem / "memory.memsw.limit_in_bytes"  # only with swap accounting
        swap = (memory or not fresh) and memsw.exists()  # memory <= memory+swap at every write
        quota = cfs_quota(cpus) if cpus is not None else -1
        return [
            *([(memsw, -1, False)] if swap else []),
            (mem / "memory.limit_in_bytes", memory or -1, memory is not None),
            *([(memsw, limits.swap_total, True)] if swap and memory else []),
            *self._memory_plan(mem, limits),
            *self._cpuset_plan(name, limits),
            (cpu / "cpu.cfs_period_us", CPU_PERIOD, False),  # the kernel's default too
            (cpu / "cpu.cfs_quota_us", quota, cpus is not None),
            (cpu / "cpu.shares", limits.shares, bool(limits.cpu_shares)),
            (self._dir("pids", name) / "pids.max", pids or "max", pids is not None),
        ]

    @staticmethod
    def _memory_plan(mem: Path, limits: Limits) -> list[tuple[Path, object, bool]]:
        swappiness, oom = limits.swappiness, int(limits.oom_kill_disable)
        plan = [(mem / "memory.oom_control", oom, bool(oom))]
        if swappiness not in (None, -1):
            plan.append((mem / "memory.swappiness", swappiness, True))
        return plan

    def _cpuset_plan(self, name: str, limits: Limits) -> list[tuple[Path, object, bool]]:
        d = self._dir("cpuset", name)
        asked = ((d / "cpuset.cpus", limits.cpuset_cpus), (d / "cpuset.mems", limits.cpuset_mems))
        return [(file, value, True) for file, value in asked if value]

    def stats(self, name: str) -> Stats:
        mem, acct = self._dir("memory", name), self._dir("cpuacct", name)
        if not mem.is_dir():
            raise CgroupError(f"no cgroup for container {name}")
        memory_stat, pids = read_flat(mem / "memory.stat"), self._dir("pids", name)
        return Stats(
            memory_usage=read_int(mem / "memory.usage_in_bytes"),
            memory_limit=read_limit(mem / "memory.limit_in_bytes"),
            cpu_usage_ns=read_int(acct / "cpuacct.usage"),
            pids_current=read_int(pids / "pids.current"),
            pids_limit=read_limit(pids / "pids.max"),
            memory_stat=memory_stat,
            memory_cache=memory_stat.get("total_inactive_file", 0),
            cpu_user_ns=read_int(acct / "cpuacct.usage_user"),
            cpu_system_ns=read_int(acct / "cpuacct.usage_sys"),
        )

    def oom_killed(self, name: str) -> bool:
        """memory.oom_control counts kills since Linux 4.13; older kernels always say False."""
        return read_flat(self._dir("memory", name) / "memory.oom_control").get("oom_kill", 0) > 0

    def _kill(self, name: str, sig: int) -> None:
        """Freeze, signal each process, thaw: a frozen cgroup cannot fork a process we miss."""
        state = self._dir("freezer", name) / "freezer.state"
        self._freeze(state)
        try:
            self._signal_each(name, sig)
        finally:
            write(state, "THAWED")

    def freeze(self, name: str) -> None:
        state = self._dir("freezer", name) / "freezer.state"
        if not self._freeze(state):
            write(state, "THAWED")
            raise CgroupError(f"cannot freeze {state.parent}: its processes did not stop")

    def thaw(self, name: str) -> None:
        write(self._dir("freezer", name) / "freezer.state", "THAWED")

    def frozen(self, name: str) -> bool:
        return read(self._dir("freezer", name) / "freezer.state", "THAWED") != "THAWED"

    @staticmethod
    def _freeze(state: Path) -> bool:
        """Ask until every task is frozen (FREEZING is transient); give up after a second."""
        deadline = time.monotonic() + _FREEZE_WAIT
        while time.monotonic() < deadline:
            write(state, "FROZEN")
            if read(state) == "FROZEN":
                return True
            time.sleep(0.001)
        return False


def detect(root: Path = Path("/sys/fs/cgroup"), parent: str = "vmctl") -> Cgroups:
    """v2 if `root` is a cgroup2 mount with controllers; else the v1 hierarchies under it.

    On a hybrid host (v1 hierarchies plus a controller-less cgroup2 at <root>/unified) the
    root itself is a tmpfs without cgroup.controllers, so v1 is chosen.
    """
    if read(root / "cgroup.controllers"):
        return CgroupsV2(root, parent)
    roots = {c: root / c for c in V1_CONTROLLERS if (root / c / "cgroup.procs").is_file()}
    return CgroupsV1(roots, parent)
