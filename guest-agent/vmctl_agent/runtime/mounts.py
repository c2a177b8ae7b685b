"""A container's own mounts (volumes, binds, tmpfs): what they are, and the recipe's steps
that make them.

    before pivot_root: open each source (a path on the host, the VM) as an O_PATH fd
    after /proc /dev /sys and the /etc files: fill each empty volume from the image
    (copy-up), then mount each one, bound from /proc/self/fd/N, in order

The sources are held by fds across pivot_root, so they are resolved on the host, as Docker
resolves them; the destinations are made and resolved after it, inside the container, so a
symlink in the image cannot aim a mount at the host. A container without mounts pays
nothing: no step runs. Everything here dies with the container's mount namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from vmctl_agent import syscalls as sc

PROPAGATIONS = {
    "rprivate": sc.MS_REC | sc.MS_PRIVATE,
    "private": sc.MS_PRIVATE,
    "rslave": sc.MS_REC | sc.MS_SLAVE,
    "slave": sc.MS_SLAVE,
}
_FLAGS = {
    "ro": (sc.MS_RDONLY, True), "rw": (sc.MS_RDONLY, False),
    "nosuid": (sc.MS_NOSUID, True), "suid": (sc.MS_NOSUID, False),
    "nodev": (sc.MS_NODEV, True), "dev": (sc.MS_NODEV, False),
    "noexec": (sc.MS_NOEXEC, True), "exec": (sc.MS_NOEXEC, False),
    "sync": (0x10, True), "async": (0x10, False), "dirsync": (0x80, True),
    "noatime": (0x400, True), "atime": (0x400, False),
    "nodiratime": (0x800, True), "diratime": (0x800, False),
    "relatime": (0x200000, True), "norelatime": (0x200000, False),
    "strictatime": (sc.MS_STRICTATIME, True), "nostrictatime": (sc.MS_STRICTATIME, False),
    "bind": (sc.MS_BIND, True), "rbind": (sc.MS_BIND | sc.MS_REC, True),
}  # fmt: skip
TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol", "huge")
TMPFS_DEFAULTS = "noexec,nosuid,nodev"  # Docker's, for --tmpfs and --mount type=tmpfs


@dataclass(frozen=True)
class Mount:
    """One mount in a container, resolved at create: in Docker's words (type, name, mode as
    given) for inspect, and in the kernel's for the start."""

    type: str  # "bind", "volume" or "tmpfs"
    destination: str
    source: str = ""  # bind, volume: a directory or file on the host (a volume's _data)
    read_only: bool = False
    propagation: str = ""  # bind: rprivate unless asked
    options: str = ""  # tmpfs: flags and data, as `mount -o` takes them
    name: str = ""  # volume
    driver: str = ""  # volume
    mode: str = ""  # as given in Binds (`ro,z`), shown by inspect
    copy_up: bool = False  # volume: filled from the image at `destination` while empty
    recursive: bool = True  # bind: with the mounts below the source (BindOptions.NonRecursive)
    subpath: str = ""  # volume: the directory inside it that is mounted (no symlink on the way)
    listed: bool = True  # in inspect's Mounts (HostConfig.Tmpfs mounts are not, as in Docker)

    def to_json(self) -> dict:
        return asdict(self)

    def inspect(self) -> dict:
        """Docker's MountPoint: inspect's Mounts, `docker ps`'s Mounts."""
        point = {"Type": self.type}
        if self.type == "volume":
            point |= {"Name": self.name}
        point |= {"Source": self.source, "Destination": self.destination}
        if self.type == "volume":
            point |= {"Driver": self.driver}
        point |= {"Mode": self.mode, "RW": not self.read_only, "Propagation": self.propagation}
        return point


def parse_options(text: str) -> tuple[int, str]:
    """`mount -o` text to mount(2)'s flags and data (what the kernel reads as the
    filesystem's own options), later options winning, as mount(8) does."""
    flags, data = 0, []
    for option in filter(None, text.split(",")):
        known = _FLAGS.get(option)
        if known is None:
            data.append(option)
        elif known[1]:
            flags |= known[0]
        else:
            flags &= ~known[0]
    return flags, ",".join(data)


def root_propagation(mounts: Sequence[Mount]) -> int:
    """The container's root is made rprivate, or rslave when a bind asks for slave: a slave
    bind receives the host's new mounts only through a root that does."""
    if any(m.propagation in ("slave", "rslave") for m in mounts):
        return sc.MS_REC | sc.MS_SLAVE
    return sc.MS_REC | sc.MS_PRIVATE


# -- the steps, in the container's first process -------------------------------------------


def open_sources(mounts: Sequence[Mount]) -> tuple[int, ...]:
    """Before pivot_root: each source as an O_PATH fd (-1 for a tmpfs)."""
    return tuple(_open_source(m) for m in mounts)


def _open_source(m: Mount) -> int:
    if m.type == "tmpfs":
        return -1
    fd = os.open(m.source, os.O_PATH | os.O_CLOEXEC)
    return _walk(fd, m.subpath) if m.subpath else fd


def _walk(fd: int, subpath: str) -> int:
    """`subpath` below the held volume, one name at a time, no symlink followed: a volume's
    content is a container's to write, and a symlink there must not lead to the host."""
    for name in subpath.split("/"):
        try:
            child = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"cannot mount volume subpath {subpath}: {name} is a symlink")
    return fd


def mount_all(mounts: Sequence[Mount], sources: Sequence[int], proc: str = "/proc") -> None:
    """After pivot_root, in order (a later mount may go inside an earlier one). `proc` is
    where a /proc is that shows the held fds (a view without its own: the old root's)."""
    for m, fd in zip(mounts, sources, strict=True):
        if m.type == "tmpfs":
            mount_tmpfs(m)
        else:
            if m.copy_up:
                copy_up(m.destination, fd, proc)
            bind(m, fd, proc)
        if fd >= 0:
            os.close(fd)


def mount_tmpfs(m: Mount) -> None:
    flags, data = parse_options(m.options)
    sc.mount("tmpfs", _destination(m.destination, directory=True), "tmpfs", flags, data)


def bind(m: Mount, fd: int, proc: str = "/proc") -> None:
    """A recursive bind of the held source; read-only and propagation as asked."""
    source = f"{proc}/self/fd/{fd}"
    target = _destination(m.destination, directory=stat.S_ISDIR(os.stat(source).st_mode))
    sc.mount(source, target, None, sc.MS_BIND | (sc.MS_REC if m.recursive else 0))
    if m.read_only:
        sc.mount(None, target, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
    sc.mount(None, target, None, PROPAGATIONS[m.propagation or "rprivate"])


def _destination(path: str, *, directory: bool) -> str:
    """The mount point inside the container, made if missing: resolved first (the image's
    symlinks, even dangling ones, lead where they lead inside the container, as runc's
    securejoin has it; `/` is the container's now, so none can lead out)."""
    path = os.path.realpath(path)
    if directory:
        os.makedirs(path, mode=0o755, exist_ok=True)
    elif not os.path.lexists(path):
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644))
    return path


def copy_up(destination: str, fd: int, proc: str = "/proc") -> None:
    """Docker's copy-up: a volume that is still empty receives what the image has at its
    mount point (owners, modes, times and symlinks kept), the directory's own owner and
    mode too. Done before the mount hides the image's files."""
    volume, destination = f"{proc}/self/fd/{fd}", os.path.realpath(destination)
    try:
        image_dir = os.lstat(destination)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(image_dir.st_mode) or os.listdir(volume):
        return
    shutil.copytree(destination, volume, symlinks=True, dirs_exist_ok=True, copy_function=_copy)
    _copy_owners(destination, volume)
    os.chown(volume, image_dir.st_uid, image_dir.st_gid)
    os.chmod(volume, stat.S_IMODE(image_dir.st_mode))


def _copy(source: str, target: str) -> None:
    """A regular file's bytes; a fifo, socket or device node is made again, never read."""
    st = os.lstat(source)
    if stat.S_ISREG(st.st_mode):
        shutil.copy2(source, target)
    else:
        os.mknod(target, st.st_mode, st.st_rdev)


def _copy_owners(source: str, target: str) -> None:
    """copytree keeps modes and times, not owners: give each copy its original's."""
    for root, dirs, files in os.walk(source):
        for name in dirs + files:
            original = os.path.join(root, name)
            st = os.lstat(original)
            copied = os.path.join(target, os.path.relpath(original, source))
            with contextlib.suppress(FileNotFoundError):
                os.lchown(copied, st.st_uid, st.st_gid)
                if not stat.S_ISLNK(st.st_mode):  # chown cleared setuid and setgid
                    os.chmod(copied, stat.S_IMODE(st.st_mode))
