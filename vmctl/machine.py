"""What a driver needs to boot one VM, and the small interface every driver implements.

The orchestration (`vmctl.vm`) decides *what* to boot: disk overlay, seed ISO, kernel, ports,
accelerator. A driver only knows *how* to make a hypervisor run it (libvirt or a bare
qemu-system under QMP) and how to ask it whether it still runs. Status is never stored: it is
asked of the hypervisor each time.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from vmctl.shares import Share

# The guest's console is its first serial port; the kernel writes there and so does systemd.
DEFAULT_CMDLINE = "root=/dev/vda rw console=ttyS0,115200 quiet systemd.show_status=1"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now (SSH forwards, QMP over TCP)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class MachineSpec:
    """One VM as a hypervisor sees it."""

    name: str  # the hypervisor's name for it, e.g. "vmctl-default"
    cpus: int
    memory_mib: int
    disk: Path  # qcow2 overlay on the read-only base image; discard=unmap
    seed: Path  # NoCloud seed ISO (label cidata), attached read-only
    serial_log: Path  # the guest console, appended to a file the host can tail
    ssh_port: int  # host 127.0.0.1 port forwarded to the guest's port 22 (user networking)
    accel: str  # "kvm" | "hvf" | "whpx" | "tcg"
    kernel: Path | None = None  # direct kernel boot when the image ships one; else firmware
    initrd: Path | None = None
    cmdline: str = DEFAULT_CMDLINE
    shares: tuple[Share, ...] = ()  # host folders, at the same path in the guest (shares.py)
    share_transport: str = ""  # "virtiofs" | "9p" | "sftp" (no device: sshfs over SSH)


class Driver(ABC):
    """A hypervisor that can run one MachineSpec at a time per VM name."""

    name: str  # "libvirt" | "qemu"

    @abstractmethod
    def boot(self, spec: MachineSpec) -> None:
        """Start the VM (replacing any stale definition); return once the hypervisor process
        runs. Raises VmctlError saying what failed."""

    @abstractmethod
    def is_running(self) -> bool:
        """Asked of the hypervisor each time, never remembered."""

    @abstractmethod
    def pid(self) -> int | None:
        """The QEMU process's pid when it runs on this host (None when stopped or remote)."""

    @abstractmethod
    def shutdown(self, timeout: float) -> None:
        """ACPI power button, then power off if the guest is still up after `timeout` s."""

    @abstractmethod
    def kill(self) -> None:
        """Power off at once (no-op when stopped)."""

    @abstractmethod
    def delete(self) -> None:
        """Forget the VM entirely (power it off first if needed); files are the caller's."""
