"""A container's root filesystem, set up as an ordered recipe in its own mount namespace.

    private mounts -> overlay root -> the container's mount sources held (mounts.py) ->
    pivot_root(".", ".") (the old root stays stacked, held by an fd) -> /proc -> /dev -> /sys
    -> /etc files -> docker-init (--init) -> volumes, binds and tmpfs (mounts.py) -> sysctls
    -> masked and read-only paths -> old root detached -> "/" read-only (--read-only)

Each step is small and named (rubber-docker's `contain()`). All of it runs in the container's
first process after unshare(CLONE_NEWNS), so every mount dies with the namespace: a container
can never leak a mount on the host. Everything but the overlay is mounted after pivot_root, so
a symlink in the image resolves inside the container and cannot aim a mount or a new file at
the host; what must come from the host (device nodes, /sys for host networking) is bound from
the old root, which only this process can reach (it is the working directory until the end,
so host paths are given relative), then detached. pivot_root(".", ".") needs no directory for
the old root, so nothing is written into the container's layer: on this path every new inode
on the host's disk costs more than a mount.
/dev is a nodev tmpfs whose few nodes are binds of the host's: a node made with mknod inside is
useless, so no devices cgroup is needed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from vmctl_agent import syscalls as sc
from vmctl_agent.runtime import devices as host_devices
from vmctl_agent.runtime import mounts as user_mounts
from vmctl_agent.runtime import sysctls

MASKED = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/devices/virtual/powercap",
)  # fmt: skip
READ_ONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
ETC_FILES = ("hostname", "hosts", "resolv.conf")
SHM_SIZE = 64 << 20  # Docker's default /dev/shm
_SAFE = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
_MAX_MOUNT_DATA = 4095
_PRIVATE = sc.MS_REC | sc.MS_PRIVATE
INIT_PATH = "/sbin/docker-init"  # where dockerd puts its init in a container


@dataclass(frozen=True)
class RootfsPlan:
    """Where the pieces are (absolute paths on the host) and what the container asked for."""

    layers_root: str  # lower dirs are given relative to this, to fit mount's one-page limit
    lower: tuple[str, ...]  # top layer first, relative to layers_root
    upper: str
    work: str
    merged: str  # the mount point; any empty directory (each namespace mounts its own)
    etc_files: tuple[tuple[str, bytes], ...]  # (path in the container, its content)
    host_network: bool = False
    cgroup_v2: bool = False
    mounts: tuple[user_mounts.Mount, ...] = ()  # volumes, binds and tmpfs, in order
    shm_size: int = 0  # bytes; 0: Docker's 64 MiB
    read_only: bool = False  # `--read-only`: "/" remounted read-only at the end
    shm: str = ""  # /dev/shm: "" its own tmpfs, "none", or a host path to bind (relative)
    sysctls: tuple[tuple[str, str], ...] = ()
    init: str = ""  # `--init`: the host's static tini, bound at INIT_PATH
    privileged: bool = False  # every host device, /sys writable, nothing masked
    devices: tuple[tuple[str, str], ...] = ()  # `--device`: (host path, container path)


def make_init_layer(path: str) -> None:
    """A lower layer holding empty /etc files to bind ours over (Docker's init layer, shared
    by all containers): without it, each first start copies the image's /etc up into the
    container's layer and makes three files there. Made once, published by a rename."""
    if os.path.isdir(path):
        return
    staging = f"{path}.{os.getpid()}-{os.urandom(4).hex()}"
    os.makedirs(f"{staging}/etc", mode=0o755)
    os.chmod(staging, 0o755)
    os.chmod(f"{staging}/etc", 0o755)
    for name in ETC_FILES:
        os.close(os.open(f"{staging}/etc/{name}", os.O_WRONLY | os.O_CREAT, 0o644))
    try:
        os.rename(staging, path)
    except OSError:  # someone else made it first
        for name in ETC_FILES:
            os.unlink(f"{staging}/etc/{name}")
        os.rmdir(f"{staging}/etc")
        os.rmdir(staging)
        if not os.path.isdir(path):
            raise


def init_layer_fits(layers: tuple[str, ...]) -> bool:
    """Whether the init layer can go over these layers (top first) unnoticed: only if the
    image's /etc is a plain root-owned 0755 directory, since the topmost one's owner and mode
    are what the container sees (and a directory would hide an /etc that is a symlink)."""
    for layer in layers:
        try:
            st = os.lstat(f"{layer}/etc")
        except FileNotFoundError:
            continue
        plain = stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
        return plain and st.st_uid == 0 and st.st_gid == 0
    return True  # no /etc at all: the init layer's is the one we would have made


def setup(plan: RootfsPlan) -> None:
    """Everything up to exec; afterwards `/` is the container's and the host's is gone."""
    make_private(user_mounts.root_propagation(plan.mounts) if plan.mounts else _PRIVATE)
    mount_overlay(plan)
    sources = user_mounts.open_sources(plan.mounts) if plan.mounts else ()
    host = pivot(plan.merged)
    try:
        mount_proc()
        mount_dev(plan.shm_size, plan.shm)
        bind_devices(plan.devices, plan.privileged)
        mount_sys(plan.host_network, writable=plan.privileged)
        if plan.cgroup_v2:
            mount_cgroup(writable=plan.privileged)
        bind_etc_files(plan.etc_files)
        if plan.init:
            _bind_file(plan.init.lstrip("/"), _dir_of(INIT_PATH))  # relative: the old root's
        if plan.mounts:
            user_mounts.mount_all(plan.mounts, sources)
        sysctls.apply(plan.sysctls)
        if not plan.privileged:
            mask_paths()
            read_only_paths()
    finally:
        drop_old_root(host)
    if plan.read_only:
        make_root_read_only()


def make_private(propagation: int = _PRIVATE) -> None:
    """Nothing we mount propagates back to the host (rslave still lets the host's reach us)."""
    sc.mount(None, "/", None, propagation)


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


def pivot(root: str) -> int:
    """pivot_root into `root` (never chroot). The old root ends up stacked over the new one,
    where no path reaches it; it stays the working directory, so host paths relative to it
    name the host's files for the binds that need them. Returns an fd of it."""
    host = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    os.chdir(root)
    sc.pivot_root(".", ".")
    os.fchdir(host)
    return host


def drop_old_root(host: int) -> None:
    """Detach the old root ("." is it) and stand in the container's root."""
    os.fchdir(host)
    sc.umount(".", sc.MNT_DETACH)
    os.close(host)
    os.chdir("/")


def mount_proc() -> None:
    sc.mount("proc", _dir("/proc"), "proc", _SAFE)


def mount_dev(shm_size: int = 0, shm: str = "") -> None:
    dev = _dir("/dev")
    flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_STRICTATIME
    sc.mount("tmpfs", dev, "tmpfs", flags, "mode=755,size=65536k")
    for name in DEVICES:
        _bind_file(f"dev/{name}", f"/dev/{name}")  # the host's node (relative: the old root)
    options = "newinstance,ptmxmode=0666,mode=0620,gid=5"
    sc.mount("devpts", _dir("/dev/pts"), "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, options)
    os.symlink("pts/ptmx", "/dev/ptmx")
    if shm and shm != "none":  # the host's (--ipc host) or a donor's (--ipc container:)
        sc.mount(shm, _dir("/dev/shm"), None, sc.MS_BIND | sc.MS_REC)
    elif not shm:
        sc.mount("shm", _dir("/dev/shm"), "tmpfs", _SAFE, f"mode=1777,size={shm_size or SHM_SIZE}")
    sc.mount("mqueue", _dir("/dev/mqueue"), "mqueue", _SAFE)
    for name, target in _DEV_LINKS:
        os.symlink(target, f"/dev/{name}")


def bind_devices(devices: tuple[tuple[str, str], ...], privileged: bool) -> None:
    """`--device` nodes, and under `--privileged` every node of the host's /dev."""
    if privileged:
        for node in host_devices.host_nodes("dev"):  # relative: the old root's
            if not os.path.lexists(f"/dev/{node}"):
                _bind_file(f"dev/{node}", _dir_of(f"/dev/{node}"))
    for host, inside in devices:
        _bind_file(host.lstrip("/"), _dir_of(inside))


def mount_sys(host_network: bool, writable: bool = False) -> None:
    """sysfs, read-only unless privileged; with the host's network a fresh sysfs is refused,
    so bind the host's."""
    target, read_only = _dir("/sys"), 0 if writable else sc.MS_RDONLY
    if not host_network:
        sc.mount("sysfs", target, "sysfs", _SAFE | read_only)
        return
    sc.mount("sys", target, None, sc.MS_BIND | sc.MS_REC)  # relative: the old root's
    sc.mount(None, target, None, sc.MS_REMOUNT | sc.MS_BIND | read_only | _SAFE)


def mount_cgroup(writable: bool = False) -> None:
    """cgroup v2 in a cgroup namespace: the container sees its own subtree, read-only
    unless privileged."""
    read_only = 0 if writable else sc.MS_RDONLY
    sc.mount("cgroup", _dir("/sys/fs/cgroup"), "cgroup2", _SAFE | read_only)


def bind_etc_files(etc_files: tuple[tuple[str, bytes], ...]) -> None:
    """/etc/hostname, /etc/hosts and /etc/resolv.conf are ours, bound over the image's. They
    are made afresh at each start, so they live in the container's /dev tmpfs (a file on the
    host's disk costs more to make and delete than the whole bind), unlinked there once bound."""
    _dir("/etc")
    for inside, content in etc_files:
        staged = f"/dev/.vmctl-{os.path.basename(inside)}"
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            _write_all(fd, content)
        finally:
            os.close(fd)
        _bind_file(staged, inside)
        os.unlink(staged)


def make_root_read_only() -> None:
    """`--read-only`: the root's own mount only; volumes, tmpfs and /dev stay writable."""
    sc.mount(None, "/", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | sc.MS_NODEV)


def mask_paths() -> None:
    for path in MASKED:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(mode):
            sc.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY)
        else:
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _dir(path: str) -> str:
    os.makedirs(path, mode=0o755, exist_ok=True)
    return path


def _dir_of(path: str) -> str:
    """`path`, its directory made first (inside the container)."""
    _dir(os.path.dirname(path))
    return path


def _bind_file(source: str, target: str) -> None:
    """Bind `source` onto `target` (a file made if missing, inside the container)."""
    if not os.path.lexists(target):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
    sc.mount(source, target, None, sc.MS_BIND)
