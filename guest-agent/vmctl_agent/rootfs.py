"""A container's root filesystem, set up as an ordered recipe in its own mount namespace.

    private mounts -> overlay root -> pivot_root (old root kept at a random name) -> /proc
    -> /dev -> /sys -> /etc files -> masked and read-only paths -> old root detached

Each step is small and named (rubber-docker's `contain()`). All of it runs in the container's
first process after unshare(CLONE_NEWNS), so every mount dies with the namespace: a container
can never leak a mount on the host. Everything but the overlay is mounted after pivot_root, so
a symlink in the image resolves inside the container and cannot aim a mount or a new file at
the host; what must come from the host (device nodes, our /etc files, /sys for host networking)
is bound from the old root, kept under an unguessable name until the end, then detached.
/dev is a nodev tmpfs whose few nodes are binds of the host's: a node made with mknod inside is
useless, so no devices cgroup is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vmctl_agent import syscalls as sc

MASKED = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)  # fmt: skip
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_SAFE = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
_MAX_MOUNT_DATA = 4095


@dataclass(frozen=True)
class RootfsPlan:
    """Where the pieces are (absolute paths on the host) and what the container asked for."""

    layers_root: str  # lower dirs are given relative to this, to fit mount's one-page limit
    lower: tuple[str, ...]  # top layer first, relative to layers_root
    upper: str
    work: str
    merged: str
    etc_files: tuple[tuple[str, str], ...]  # (host file, path in the container)
    host_network: bool = False
    cgroup_v2: bool = False


def setup(plan: RootfsPlan) -> None:
    """Everything up to exec; afterwards `/` is the container's and the host's is gone."""
    make_private()
    mount_overlay(plan)
    old = pivot(plan.merged)
    try:
        mount_proc()
        mount_dev(old)
        mount_sys(old, plan.host_network)
        if plan.cgroup_v2:
            mount_cgroup()
        bind_etc_files(old, plan.etc_files)
        mask_paths()
        read_only_paths()
    finally:
        drop_old_root(old)


def make_private() -> None:
    """Nothing we mount propagates back to the host."""
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)


def mount_overlay(plan: RootfsPlan) -> None:
    data = f"lowerdir={':'.join(plan.lower)},upperdir={plan.upper},workdir={plan.work}"
    if len(data) > _MAX_MOUNT_DATA:
        raise OSError(f"image has too many layers ({len(plan.lower)}) for one overlay mount")
    cwd = os.open(".", os.O_RDONLY)
    try:
        os.chdir(plan.layers_root)  # relative lower dirs resolve from here
        sc.mount("overlay", plan.merged, "overlay", sc.MS_NODEV, data)
    finally:
        os.fchdir(cwd)
        os.close(cwd)


def pivot(root: str) -> str:
    """pivot_root into `root` (never chroot); the old root stays reachable, for the binds
    that need it, at a random name only this process knows. Returns that path."""
    old = f"/.vmctl-old-root-{os.urandom(8).hex()}"
    os.mkdir(root + old, 0o700)
    sc.pivot_root(root, root + old)
    os.chdir("/")
    return old


def drop_old_root(old: str) -> None:
    sc.umount(old, sc.MNT_DETACH)
    os.rmdir(old)


def mount_proc() -> None:
    sc.mount("proc", _dir("/proc"), "proc", _SAFE)


def mount_dev(old: str) -> None:
    dev = _dir("/dev")
    flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_STRICTATIME
    sc.mount("tmpfs", dev, "tmpfs", flags, "mode=755,size=65536k")
    for name in DEVICES:
        _bind_file(f"{old}/dev/{name}", f"/dev/{name}")
    options = "newinstance,ptmxmode=0666,mode=0620,gid=5"
    sc.mount("devpts", _dir("/dev/pts"), "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, options)
    os.symlink("pts/ptmx", "/dev/ptmx")
    sc.mount("shm", _dir("/dev/shm"), "tmpfs", _SAFE, "mode=1777,size=65536k")
    sc.mount("mqueue", _dir("/dev/mqueue"), "mqueue", _SAFE)
    for name, target in _DEV_LINKS:
        os.symlink(target, f"/dev/{name}")


def mount_sys(old: str, host_network: bool) -> None:
    """Read-only sysfs; with the host's network a fresh sysfs is refused, so bind the host's."""
    target = _dir("/sys")
    if not host_network:
        sc.mount("sysfs", target, "sysfs", _SAFE | sc.MS_RDONLY)
        return
    sc.mount(f"{old}/sys", target, None, sc.MS_BIND | sc.MS_REC)
    sc.mount(None, target, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | _SAFE)


def mount_cgroup() -> None:
    """cgroup v2 in a cgroup namespace: the container sees its own subtree, read-only."""
    sc.mount("cgroup", _dir("/sys/fs/cgroup"), "cgroup2", _SAFE | sc.MS_RDONLY)


def bind_etc_files(old: str, etc_files: tuple[tuple[str, str], ...]) -> None:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf are ours, bound over the image's."""
    _dir("/etc")
    for source, inside in etc_files:
        _bind_file(old + source, inside)


def mask_paths() -> None:
    for path in MASKED:
        if os.path.isdir(path):
            sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
        elif os.path.exists(path):
            sc.mount("/dev/null", path, None, sc.MS_BIND)


def read_only_paths() -> None:
    for path in READ_ONLY:
        if os.path.exists(path):
            sc.mount(path, path, None, sc.MS_BIND | sc.MS_REC)
            flags = sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | _SAFE
            sc.mount(None, path, None, flags)


_DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("core", "/proc/kcore"),
)


def _dir(path: str) -> str:
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path


def _bind_file(source: str, target: str) -> None:
    """Bind `source` onto `target` (a file made if missing, inside the container)."""
    if not os.path.lexists(target):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
    sc.mount(source, target, None, sc.MS_BIND)
