"""A VM's configuration (`vm.json`): resources, driver, image, and the engine's daemon.json keys.

Flags given to `vmctl start` or `vmctl config` change the stored file; the VM picks changes up
on its next start (CPUs, memory and the engine's registries at once; a bigger disk grows the
overlay and cloud-init grows the filesystem). The file holds what the user chose, never state:
whether the VM runs is always asked of the hypervisor.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vmctl import atomic, shares
from vmctl.errors import VmctlError
from vmctl.shares import Share

DRIVERS = ("libvirt", "qemu")
ACCELS = ("auto", "kvm", "hvf", "whpx", "tcg")
HOST_SYSTEMS = {"win32": "windows", "darwin": "macos"}  # sys.platform -> the agent's word


def default_driver() -> str:
    """libvirt has no Windows accelerator: there the bare-QEMU driver is the default."""
    return "qemu" if sys.platform == "win32" else "libvirt"


@dataclass(frozen=True)
class VMConfig:
    cpus: int = 2
    memory_mib: int = 2048
    disk_gib: int = 20
    driver: str = field(default_factory=default_driver)
    libvirt_uri: str | None = None  # None: qemu:///system as root, qemu:///session otherwise
    accel: str = "auto"  # probed once per host and kernel (KVM can be present yet hang)
    image: str | None = None  # None: the default image; else a path or URL
    registry_mirrors: tuple[str, ...] = ()
    insecure_registries: tuple[str, ...] = ()
    publish_address: str = "127.0.0.1"  # where published ports listen on this machine
    mounts: tuple[str, ...] = ()  # PATH[:ro] shared at the same path; none: the home folder
    share_transport: str | None = None  # None: as shares.choose_transport picks

    def __post_init__(self) -> None:
        _check(self)

    def daemon_json(self, data_root: str = "/var/lib/vmctl-agent") -> dict:
        """The engine's dockerd-style configuration inside the guest."""
        return {
            "data-root": data_root,
            "registry-mirrors": list(self.registry_mirrors),
            "insecure-registries": list(self.insecure_registries),
            "bridge": "docker0",  # the default bridge network, in the VM only
            # QEMU's user networking: the user's machine (its loopback) as containers reach it
            "host-gateway-ip": "10.0.2.2",
            # the agent refuses binds of other host paths with Docker Desktop's "mounts denied"
            "vmctl-shared-paths": [share.guest for share in self.shares()],
            # on Windows the docker CLI sends C:\\Users\\me\\src: the agent reads it as /c/...
            "vmctl-host-os": HOST_SYSTEMS.get(sys.platform, "linux"),
        }

    def shares(self) -> tuple[Share, ...]:
        """The host folders this VM sees at the same path (the home folder by default)."""
        return shares.for_settings(self.mounts, sys.platform, str(Path.home()))

    def edit_mounts(self, add: Sequence[str] = (), remove: Sequence[str] = ()) -> VMConfig:
        """`vmctl config --mount PATH[:ro]` / `--unmount PATH` on this machine, which the
        GUI's settings call too: a folder that cannot be shared is refused in words."""
        mounts = shares.edit(self.mounts, add, remove, sys.platform, on_host=True)
        return dataclasses.replace(self, mounts=mounts)

    def transport(self) -> str:
        root = sys.platform != "win32" and os.geteuid() == 0
        return shares.choose_transport(self.driver, sys.platform, self.share_transport, root)

    def replace(self, **changes) -> VMConfig:
        """A copy with `changes` (None values are ignored: a flag the user did not give)."""
        given = {k: v for k, v in changes.items() if v is not None}
        for key in ("registry_mirrors", "insecure_registries", "mounts"):
            if key in given:
                given[key] = tuple(given[key])
        return dataclasses.replace(self, **given)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["registry_mirrors"] = list(self.registry_mirrors)
        data["insecure_registries"] = list(self.insecure_registries)
        data["mounts"] = list(self.mounts)
        return data


def in_vm(host_folder: str) -> str:
    """Where a shared host folder is in the VM: the same path (on Windows `/c/Users/me/..`),
    so a bind of it names the folder the engine sees."""
    return shares.guest_path(host_folder, sys.platform)


def load(path: Path) -> VMConfig:
    """The stored config, or the defaults when the VM was never created."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return VMConfig()
    except ValueError as e:
        raise VmctlError(f"{path} is not valid JSON ({e}): fix or delete it") from None
    if not isinstance(raw, dict):
        raise VmctlError(f"{path} must hold a JSON object: fix or delete it")
    known = {f.name for f in dataclasses.fields(VMConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise VmctlError(f"{path} has unknown keys {', '.join(unknown)}: fix or delete them")
    try:
        return VMConfig().replace(**raw)
    except TypeError as e:
        raise VmctlError(f"{path}: {e}") from None


def save(config: VMConfig, path: Path) -> None:
    """Atomically: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(config.to_json(), indent=1) + "\n")


def _check(config: VMConfig) -> None:
    def positive_int(name: str, value: object, low: int, high: int, unit: str = "") -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise VmctlError(f"{name} must be a whole number from {low} to {high}{unit}")

    positive_int("cpus", config.cpus, 1, os.cpu_count() or 1, " (this host's CPUs)")
    positive_int("memory", config.memory_mib, 512, 1 << 20, " MiB")
    positive_int("disk", config.disk_gib, 4, 1 << 16, " GiB")
    if config.driver not in DRIVERS:
        raise VmctlError(f"unknown driver {config.driver!r}: use one of {', '.join(DRIVERS)}")
    _check_address(config.publish_address)
    if config.accel not in ACCELS:
        raise VmctlError(f"unknown accelerator {config.accel!r}: use one of {', '.join(ACCELS)}")
    for url in config.registry_mirrors:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise VmctlError(
                f"invalid registry mirror {url!r}: it must start with http:// or https://"
            )
    if not all(isinstance(m, str) for m in config.mounts):
        raise VmctlError("mounts must be folders to share, as PATH or PATH:ro")
    config.shares()  # each folder absolute, none twice
    config.transport()  # one this host can run
    for host in config.insecure_registries:
        if not isinstance(host, str) or not host or "://" in host or host.strip() != host:
            raise VmctlError(f"invalid insecure registry {host!r}: use HOST:PORT or a CIDR")


def _check_address(address: object) -> None:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise VmctlError(
            f"publish address {address!r} is not an IP address (e.g. 127.0.0.1, or 0.0.0.0 "
            "to publish ports to the network)"
        ) from None
