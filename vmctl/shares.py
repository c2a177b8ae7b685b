"""The user's folders shared into the VM at the same path, so `docker run -v "$PWD":/src`
names in the VM the very folder it names on the host (pure: what to share, how, and the
guest's fstab; the drivers turn a MachineSpec's shares into devices).

    defaults   the home directory; on macOS also /Volumes, /private, /tmp and /var/folders,
               as Docker Desktop shares them; on Windows C:\\Users\\me, seen as /c/Users/me
    transport  as Lima chooses: virtiofs under libvirt on Linux (Debian's QEMU ships
               /usr/lib/qemu/virtiofsd), 9p with QEMU elsewhere on Linux and macOS, and
               reverse SFTP (the guest's sshfs over the VM's SSH connection) on Windows, whose
               QEMU has no 9p; `vmctl config --share-transport` overrides the choice

Not wired into `vmctl start` yet: the drivers render shares given in a MachineSpec, and the
guest's fstab comes from `fstab`, but nothing passes the user's settings in until a real VM
has shown each transport working (issue 14, item 3).
"""

from __future__ import annotations

import ntpath
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vmctl.errors import VmctlError

TRANSPORTS = ("virtiofs", "9p", "sftp")
MAC_DEFAULTS = ("/Volumes", "/private", "/tmp", "/var/folders")
NINEP_OPTIONS = "trans=virtio,version=9p2000.L,msize=262144,cache=mmap"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"


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


def choose_transport(driver: str, platform: str, override: str | None = None) -> str:
    """The transport for this driver on this platform, unless the user chose one."""
    if override is not None:
        if override not in TRANSPORTS:
            raise VmctlError(f"unknown share transport {override!r}: use one of virtiofs, 9p, sftp")
        if override == "9p" and platform == "win32":
            raise VmctlError("QEMU on Windows has no 9p: use sftp")
        if override == "virtiofs" and (platform != "linux" or driver != "libvirt"):
            raise VmctlError("virtiofs needs libvirt on a Linux host: use 9p or sftp")
        return override
    if platform == "win32":
        return "sftp"
    return "virtiofs" if platform == "linux" and driver == "libvirt" else "9p"


def fstab(shares: Iterable[Share], transport: str) -> str:
    """The guest's /etc/fstab lines for virtiofs and 9p (sftp mounts are made over SSH);
    `nofail`, so a share the host stopped offering never blocks the VM's boot."""
    if transport == "sftp":
        return ""
    lines = []
    for share in shares:
        mode = "ro" if share.read_only else "rw"
        options = f"{mode},nofail" if transport == "virtiofs" else f"{NINEP_OPTIONS},{mode},nofail"
        lines.append(f"{share.tag} {_fstab_escape(share.guest)} {transport} {options} 0 0\n")
    return "".join(lines)


def _fstab_escape(path: str) -> str:
    """fstab separates fields by blanks: they, and backslashes, are written in octal."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def _flavour(platform: str):
    return ntpath if platform == "win32" else posixpath
