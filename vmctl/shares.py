"""The user's folders shared into the VM at the same path, so `docker run -v "$PWD":/src`
names in the VM the very folder it names on the host (pure: what to share, how, and the
guest's fstab; the drivers turn a MachineSpec's shares into devices).

    defaults   the home directory; on macOS also /Volumes, /private, /tmp and /var/folders,
               as Docker Desktop shares them; on Windows C:\\Users\\me, seen as /c/Users/me
    transport  virtiofs on Linux as root, with either driver (Debian's QEMU ships
               /usr/lib/qemu/virtiofsd: libvirt runs it, the qemu driver starts it itself);
               reverse SFTP (the guest's sshfs over the VM's SSH connection) elsewhere, and
               for a Linux user without root, so files made in the VM are theirs. 9p (QEMU's
               virtfs) when asked: the built image's kernel (Debian's generic one) has it;
               the downloaded genericcloud image's kernel has none, which the guest says.
               `vmctl config --share-transport` overrides the choice.

`guest_script` is what the deploy stage runs as root in the guest before the engine starts:
the shares' fstab lines (mounted again at every boot, before vmctl-agent.service), then each
share mounted now if it is not yet.
"""

from __future__ import annotations

import ntpath
import os
import posixpath
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vmctl.errors import VmctlError

TRANSPORTS = ("virtiofs", "9p", "sftp")
# The VM's own system: a share at the same path would hide it (and break the VM).
SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
                  "/proc", "/run", "/sbin", "/sys", "/usr", "/var/lib")  # fmt: skip
SYSTEM_PARENTS = ("/", "/var")  # shared whole, they would hide the folders above
MAC_DEFAULTS = ("/Volumes", "/private", "/tmp", "/var/folders")
NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=262144,cache=mmap"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
# a 256 MiB read in a container under TCG: 4.43 s at the kernel's 128 KiB, 2.93 s at 4 MiB
VIRTIOFS_READAHEAD_KB = 4096
# Ordered before the engine at boot: a container started at boot must find its folder there.
BEFORE_ENGINE = "x-systemd.before=vmctl-agent.service"
OUR_FSTAB_LINES = r"^vmctl[0-9]+[[:space:]]"  # the tags `for_settings` gives, and only ours
NO_9P = (
    "the VM's kernel has no 9p (Debian's cloud kernel, in its genericcloud image, lacks it): use "
    "--share-transport virtiofs or sftp"
)


@dataclass(frozen=True)
class Share:
    """One host folder in the VM: `tag` names the device the guest mounts it from."""

    host: str
    guest: str
    read_only: bool = False
    tag: str = ""


def parse_mount(text: str, platform: str) -> tuple[str, bool]:
    """`PATH[:ro]` (`:rw` too) as `vmctl config --mount` takes it; Windows paths keep their
    drive letter's colon (`C:\\src:ro`)."""
    path, read_only = text, False
    for suffix, ro in ((":ro", True), (":rw", False)):
        if text.endswith(suffix) and len(text) > len(suffix) + 2:
            path, read_only = text[: -len(suffix)], ro
    if not _flavour(platform).isabs(path):
        raise VmctlError(f"the folder to share must be an absolute path: {path!r}")
    return _flavour(platform).normpath(path), read_only


def guest_path(host: str, platform: str) -> str:
    """Where a host folder appears in the VM: the same path, or on Windows `/c/Users/me`
    (the docker CLI's Windows paths are translated the same way)."""
    if platform != "win32":
        return posixpath.normpath(host)
    drive, rest = ntpath.splitdrive(ntpath.normpath(host))
    if len(drive) != 2 or drive[1] != ":":
        raise VmctlError(f"only folders on a drive letter can be shared: {host!r}")
    parts = [p for p in rest.split("\\") if p]
    return "/" + "/".join([drive[0].lower(), *parts])


def defaults(platform: str, home: str) -> list[str]:
    return [home, *MAC_DEFAULTS] if platform == "darwin" else [home]


def for_settings(mounts: Sequence[str], platform: str, home: str) -> tuple[Share, ...]:
    """The shares for the user's `--mount` settings (the defaults when there are none), each
    with a device tag; the same folder twice is refused."""
    wanted = [parse_mount(m, platform) for m in mounts]
    wanted = wanted or [(path, False) for path in defaults(platform, home)]
    seen: set[str] = set()
    found = []
    for index, (host, read_only) in enumerate(wanted):
        guest = guest_path(host, platform)
        if guest in seen:
            raise VmctlError(f"{host} is shared twice: give each folder once")
        seen.add(guest)
        found.append(Share(host, guest, read_only, f"vmctl{index}"))
    return tuple(found)


def edit(
    mounts: Sequence[str],
    add: Sequence[str],
    remove: Sequence[str],
    platform: str,
    on_host: bool = False,
) -> tuple[str, ...]:
    """`vmctl config --mount PATH[:ro]` adds a folder (or changes its mode: one entry per
    path) and `--unmount PATH` takes one away; with none left, the defaults apply again.
    A folder added is checked (`refuse_share`); `on_host`: it must be a folder here too."""
    kept = {parse_mount(m, platform)[0]: m for m in mounts}
    for text in remove:
        path = parse_mount(text, platform)[0]
        if kept.pop(path, None) is None:
            listed = ", ".join(kept) or "none: the defaults are shared"
            raise VmctlError(f"{path} is not in the shared folders (they are: {listed})")
    for text in add:
        path, read_only = parse_mount(text, platform)
        others = [parse_mount(m, platform) for p, m in kept.items() if p != path]
        refuse_share(path, read_only, others, platform, on_host)
        kept[path] = path + (":ro" if read_only else "")
    return tuple(kept.values())


def refuse_share(path: str, read_only: bool, others: Sequence[tuple[str, bool]], platform: str,
                 on_host: bool = False) -> None:  # fmt: skip
    """Raise, in words, when `path` cannot be shared: a folder of the VM's own system (it
    would be hidden under the share at the same path), one that adds nothing to a share
    with the same access that holds it or that it holds, or (`on_host`) a file here (one
    not made yet may be: a start checks it is there)."""
    guest = guest_path(path, platform)
    system = next((s for s in SYSTEM_FOLDERS if guest == s or _within(guest, s)), None)
    if system is not None or guest in SYSTEM_PARENTS:
        where = system or guest
        raise VmctlError(f"{path} cannot be shared: the VM's own {where} is there, and a "
                         "share at the same path would hide it")  # fmt: skip
    for other, other_ro in others:
        there = guest_path(other, platform)
        inner, outer = (path, other) if _within(guest, there) else (other, path)
        if other_ro == read_only and (_within(guest, there) or _within(there, guest)):
            raise VmctlError(f"{inner} is inside {outer}, which is shared too: it is in the VM "
                             f"already (share one of them, or one read-only)")  # fmt: skip
    if on_host and os.path.exists(path) and not os.path.isdir(path):
        raise VmctlError(f"{path} is not a folder: only folders can be shared")


def _within(path: str, folder: str) -> bool:
    """`path` is below `folder` (both guest paths, normalised)."""
    return path.startswith(folder.rstrip("/") + "/") and path != folder


def choose_transport(
    driver: str, platform: str, override: str | None = None, root: bool = True
) -> str:
    """The transport for this driver on this platform, unless the user chose one.

    Ownership decides for a user without root on Linux: virtiofsd then runs as root (libvirt's
    system daemon) and keeps the owner each file is made with, so a container running as root
    would leave root-owned files in the user's project; over sftp every file is made by the
    user's own vmctl process. As root, virtiofs (files belong to whom made them, as with
    dockerd on Linux)."""
    if override is not None:
        if override not in TRANSPORTS:
            raise VmctlError(f"unknown share transport {override!r}: use one of virtiofs, 9p, sftp")
        if override == "9p" and platform == "win32":
            raise VmctlError("QEMU on Windows has no 9p: use sftp")
        if override == "virtiofs" and platform != "linux":
            raise VmctlError("virtiofs needs a Linux host (virtiofsd): use sftp")
        return override
    return "virtiofs" if platform == "linux" and root else "sftp"


def fstab(shares: Iterable[Share], transport: str) -> str:
    """The guest's /etc/fstab lines for virtiofs and 9p (sftp mounts are made over SSH);
    `nofail`, so a share the host stopped offering never blocks the VM's boot."""
    if transport == "sftp":
        return ""
    lines = []
    for share in shares:
        mode = "ro" if share.read_only else "rw"
        options = f"{mode},nofail,{BEFORE_ENGINE}"
        options = options if transport == "virtiofs" else f"{NINEP_OPTIONS},{options}"
        lines.append(f"{share.tag} {_fstab_escape(share.guest)} {transport} {options} 0 0\n")
    return "".join(lines)


def guest_script(shares: Sequence[Share], transport: str) -> list[str]:
    """Shell lines (run as root, `sh -e`) that make the guest's fstab name exactly these
    shares and mount each one not mounted yet; a share that does not mount stops the start
    with its path, never an engine binding an empty folder in its place."""
    if transport == "sftp":  # the host agent mounts them over its SSH connection
        return [f"sed -i -E '/{OUR_FSTAB_LINES}/d' /etc/fstab", *map(_mounted_by_host, shares)]
    if not shares:
        return [f"sed -i -E '/{OUR_FSTAB_LINES}/d' /etc/fstab"]
    lines = ["modprobe -q 9pnet_virtio || { echo " + shlex.quote(NO_9P) + " >&2; exit 1; }"]
    lines = lines if transport == "9p" else []
    lines.append(f"sed -i -E '/{OUR_FSTAB_LINES}/d' /etc/fstab")
    entries = " ".join(shlex.quote(line) for line in fstab(shares, transport).splitlines())
    lines.append(f"printf '%s\\n' {entries} >> /etc/fstab")
    for share in sorted(shares, key=lambda s: s.guest.count("/")):  # a folder before its own
        path = shlex.quote(share.guest)
        failed = shlex.quote(
            f"the shared folder {share.guest} did not mount in the VM over {transport} "
            "(one added while the VM ran is attached at its next boot: vmctl stop, vmctl start; "
            "else vmctl ssh -- sudo dmesg says why)"
        )
        lines.append(f"mkdir -p {path}")
        lines.append(f"mountpoint -q {path} || mount {path} || {{ echo {failed} >&2; exit 1; }}")
        if transport == "virtiofs":  # reads go through the page cache: a longer readahead
            bdi = f"/sys/class/bdi/$(mountpoint -d {path})/read_ahead_kb"
            lines.append(f"echo {VIRTIOFS_READAHEAD_KB} > {bdi} || true")
    return lines


def _mounted_by_host(share: Share) -> str:
    """Wait (60 s at most) for the host agent's sshfs mount: it connects as the ssh stage ends."""
    path = shlex.quote(share.guest)
    failed = shlex.quote(
        f"the shared folder {share.guest} was not mounted over sftp within 60 s "
        "(vmctl logs --hostagent says why)"
    )
    return (
        f"i=0; until mountpoint -q {path}; do i=$((i+1)); "
        f"if [ $i -gt 600 ]; then echo {failed} >&2; exit 1; fi; sleep 0.1; done"
    )


def _fstab_escape(path: str) -> str:
    """fstab separates fields by blanks: they, and backslashes, are written in octal."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def _flavour(platform: str):
    return ntpath if platform == "win32" else posixpath
