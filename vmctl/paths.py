"""Every path vmctl uses, from one place (lima's filenames.go).

`VMCTL_HOME` relocates all state; otherwise it lives in the platform's user data directory.
Each VM has a directory of fixed file names, so status can always be derived from what is
there (pid files, sockets), never from a stored flag.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from vmctl.errors import VmctlError

DEFAULT_NAME = "default"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")
# macOS caps a unix socket path at 104 bytes (Linux at 108): docker.sock must fit.
MAX_SOCKET_PATH = 103


def home() -> Path:
    """Where all of vmctl's state lives."""
    override = os.environ.get("VMCTL_HOME")
    if override:
        return Path(override).expanduser().resolve()
    return platformdirs.user_data_path("vmctl", appauthor=False)


def images_dir() -> Path:
    """Base images, downloaded or built once and shared by every VM."""
    return home() / "images"


def domain_name(name: str) -> str:
    return f"vmctl-{name}"


@dataclass(frozen=True)
class VMPaths:
    """The fixed files of one VM."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    config = property(lambda self: self.root / "vm.json")
    disk = property(lambda self: self.root / "disk.qcow2")
    seed = property(lambda self: self.root / "seed.iso")
    ssh_key = property(lambda self: self.root / "ssh_key")
    ssh_key_pub = property(lambda self: self.root / "ssh_key.pub")
    host_key = property(lambda self: self.root / "ssh_host_ed25519_key")
    host_key_pub = property(lambda self: self.root / "ssh_host_ed25519_key.pub")
    known_hosts = property(lambda self: self.root / "known_hosts")
    domain = property(lambda self: domain_name(self.name))  # also OpenSSH's HostKeyAlias
    serial_log = property(lambda self: self.root / "serial.log")
    hostagent_pid = property(lambda self: self.root / "hostagent.pid")
    hostagent_log = property(lambda self: self.root / "hostagent.log")
    qemu_pid = property(lambda self: self.root / "qemu.pid")
    qmp_socket = property(lambda self: self.root / "qmp.sock")
    docker_sock = property(lambda self: self.root / "docker.sock")
    docker_host = property(lambda self: self.root / "docker.host")  # the URL the host agent serves
    qemu_log = property(lambda self: self.root / "qemu.log")  # QEMU's own stderr (qemu driver)
    runtime = property(lambda self: self.root / "runtime.json")  # facts of the current boot
    start_lock = property(lambda self: self.root / "start.lock")  # flock'd while starting


def vm(name: str = DEFAULT_NAME) -> VMPaths:
    """The paths of VM `name`, checked: a usable name, and sockets short enough for macOS."""
    if not _NAME.fullmatch(name):
        raise VmctlError(
            f"invalid VM name {name!r}: use 1-31 lowercase letters, digits and dashes, "
            "starting with a letter or digit"
        )
    paths = VMPaths(home() / name)
    if len(os.fsencode(paths.docker_sock)) > MAX_SOCKET_PATH:
        raise VmctlError(
            f"{paths.docker_sock} is too long for a unix socket ({MAX_SOCKET_PATH} bytes at "
            "most on macOS): set VMCTL_HOME to a shorter directory"
        )
    return paths
