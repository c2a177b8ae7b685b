"""A VM started the way a user starts one (`vmctl start` through the CLI), and the user's
commands against it: `vmctl`, the real docker CLI on its forwarded socket, `vmctl ssh`.

conftest's session-scoped `user_vm` boots one per driver and shares it among every test that
only uses it (networking, volumes, compose); tests that kill, stop or delete a VM boot their own
with `started`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agentserver import docker_cli, push_test_images

DRIVERS = ("libvirt", "qemu")


def vmctl(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "VMCTL_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "vmctl.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def docker(home: Path, name: str, *args: str, input: str | None = None, timeout: float = 300):
    env = {**os.environ, "DOCKER_HOST": f"unix://{home / name / 'docker.sock'}"}
    env.pop("DOCKER_CONTEXT", None)
    return subprocess.run(
        [docker_cli(), *args], capture_output=True, text=True, input=input, env=env,
        timeout=timeout,
    )  # fmt: skip


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"{done.args}: {done.stderr[-3000:]}"
    return done.stdout


@dataclass(frozen=True)
class UserVM:
    home: Path
    name: str
    driver: str

    @property
    def docker_host(self) -> str:
        return f"unix://{self.home / self.name / 'docker.sock'}"

    def vmctl(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """`vmctl ARGS --name NAME`."""
        return vmctl(self.home, *args, "--name", self.name, timeout=timeout)

    def docker(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return docker(self.home, self.name, *args, **kw)

    def ssh(self, *command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """A command in the guest, as `vmctl ssh` runs it."""
        return vmctl(self.home, "ssh", "--name", self.name, "--", *command, timeout=timeout)


def shared_root(base: Path) -> Path:
    """The folder of pytest's temporary folder `base` that the shared VMs share: only it, so
    a VM (its host agent forwarding edits, virtiofs setting times) never touches the files of
    the tests that do not use it."""
    return base / "vm-shared"


def read_only_root(base: Path) -> Path:
    return base / "vm-read-only"


def shared_folders(base: Path) -> tuple[str, ...]:
    """`vmctl start` flags sharing `shared_root(base)` and, read-only, `read_only_root(base)`
    (both made here)."""
    for folder in (shared_root(base), read_only_root(base)):
        folder.mkdir(exist_ok=True)
    return ("--mount", str(shared_root(base)), "--mount", f"{read_only_root(base)}:ro")


@contextlib.contextmanager
def started(
    home: Path, name: str, driver: str, disk: Path, registry, *options: str
) -> Iterator[UserVM]:
    """`vmctl start` of a fresh VM whose docker.io mirror is `registry` (the host's loopback,
    seen from the guest as 10.0.2.2), with the test images pushed; deleted on the way out.

    `name` must be unique on this machine: libvirt's domain names are one namespace per daemon,
    so two runs (CI jobs, several developers) must never define or delete each other's."""
    if driver == "libvirt":
        services = subprocess.run(["bash", "scripts/services.sh"], capture_output=True, text=True)
        assert services.returncode == 0, f"libvirtd did not start: {services.stderr}"
    push_test_images(registry)
    mirror = f"http://10.0.2.2:{registry.port}"
    began = time.monotonic()
    start = vmctl(
        home, "start", "--name", name, "--driver", driver, "--image", str(disk),
        "--cpus", "2", "--memory", "1024", "--disk", "8",
        "--registry-mirror", mirror, "--insecure-registry", f"10.0.2.2:{registry.port}",
        *options,
    )  # fmt: skip
    print(f"\n{driver}: first start took {time.monotonic() - began:.0f} s\n{start.stderr}")
    try:
        ok(start)
        yield UserVM(home, name, driver)
    finally:
        _keep_logs(home, name)
        vmctl(home, "delete", "--name", name)


def _keep_logs(home: Path, name: str) -> None:
    """The host agent's log and the guest's console, kept beside the deleted VM (pytest keeps
    its last three temporary folders): what a failure left behind is read there."""
    for log in ("hostagent.log", "serial.log"):
        with contextlib.suppress(OSError):
            shutil.copyfile(home / name / log, home / f"{name}-{log}")
