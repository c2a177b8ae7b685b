"""virtiofs for the bare-QEMU driver, which must run what libvirt runs for its domains: one
virtiofsd per shared folder (Debian's, from QEMU 7.2), listening in the VM's folder before
QEMU connects, and exiting on its own when QEMU hangs up. QEMU's memory must be shared with
them (a memfd backend).

virtiofsd needs root (its sandbox is a mount namespace and it serves every file as its owner
asks): a user without root shares over sftp instead, and is told so if virtiofsd fails.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

from vmctl.errors import VmctlError
from vmctl.machine import MachineSpec
from vmctl.shares import VIRTIOFSD, Share


def qemu_args(spec: MachineSpec, vm_dir: Path) -> list[str]:
    """The memfd memory backend and a vhost-user-fs device per share."""
    memory = f"memory-backend-memfd,id=vmctl-mem,size={spec.memory_mib}M,share=on"
    args = ["-object", memory, "-numa", "node,memdev=vmctl-mem"]
    for share in spec.shares:
        path = str(socket_path(vm_dir, share)).replace(",", ",,")
        args += ["-chardev", f"socket,id={share.tag},path={path}"]
        device = f"vhost-user-fs-pci,queue-size=1024,chardev={share.tag},tag={share.tag}"
        args += ["-device", device]
    return args


def socket_path(vm_dir: Path, share: Share) -> Path:
    return vm_dir / f"{share.tag}.sock"


def virtiofsd_argv(share: Share, socket: Path) -> list[str]:
    """Commas and backslashes in the folder are escaped as virtiofsd's option parser wants."""
    source = share.host.replace("\\", "\\\\").replace(",", "\\,")
    return [VIRTIOFSD, f"--socket-path={socket}", "-o", f"source={source}", "-o", "cache=auto"]


def start(
    spec: MachineSpec, vm_dir: Path, timeout: float, detached: dict[str, Any]
) -> list[subprocess.Popen[bytes]]:
    """A virtiofsd per share, each listening; none left running if one fails."""
    if spec.share_transport != "virtiofs":
        return []
    started: list[subprocess.Popen[bytes]] = []
    try:
        for share in spec.shares:
            started.append(_one(share, vm_dir, timeout, detached))
    except BaseException:
        stop(started)
        raise
    return started


def stop(servers: list[subprocess.Popen[bytes]]) -> None:
    for proc in servers:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def _one(share: Share, vm_dir: Path, timeout: float, detached: dict) -> subprocess.Popen[bytes]:
    socket = socket_path(vm_dir, share)
    socket.unlink(missing_ok=True)
    log_path = vm_dir / f"{share.tag}.virtiofsd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            virtiofsd_argv(share, socket),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, **detached,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    while not socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop([proc])
            said = " / ".join(log_path.read_text(errors="replace").splitlines()[-5:])
            raise VmctlError(
                f"virtiofsd did not start for the shared folder {share.host}: "
                f"{said or '(no message)'} (it needs root; without it: --share-transport sftp)"
            )
        time.sleep(0.05)
    return proc
