"""A real guest kernel and a busybox initramfs, for fast boots that test hypervisor plumbing.

The kernel is Debian 12's cloud kernel, fetched with `apt-get download` (the package registry
is reachable where the internet is not) and unpacked without installing it. The initramfs is a
static busybox whose /init prints a marker on the console and powers off: a real guest that
reaches PID 1 under TCG in a few seconds. Both are cached across test runs.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("VMCTL_TEST_CACHE", "/var/cache/vmctl-test"))
MARKER = "vmctl-initramfs-reached-pid1"

INIT = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox echo {MARKER}
/bin/busybox sleep "${{VMCTL_SLEEP:-0}}"
/bin/busybox poweroff -f
"""


def _locked(name: str):
    CACHE.mkdir(parents=True, exist_ok=True)
    lock = open(CACHE / f".{name}.lock", "w")  # noqa: SIM115 - held until closed by the caller
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def kernel() -> Path:
    """vmlinuz of Debian 12's cloud kernel: its virtio drivers are built in, where the guest
    image's generic kernel loads them from its initrd, which the busybox initramfs is not."""
    dest = CACHE / "vmlinuz"
    with _locked("kernel"):
        if dest.exists():
            return dest
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            deps = subprocess.run(
                ["apt-cache", "depends", "linux-image-cloud-amd64"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            package = next(
                line.split(":", 1)[1].strip()
                for line in deps.splitlines()
                if line.strip().startswith("Depends: linux-image-")
            )
            subprocess.run(
                ["apt-get", "download", "-q", package], cwd=tmp, check=True, capture_output=True
            )
            deb = next(Path(tmp).glob("*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/x"], check=True)
            found = next(Path(tmp, "x", "boot").glob("vmlinuz-*"))
            shutil.copyfile(found, f"{tmp}/vmlinuz")
            os.replace(f"{tmp}/vmlinuz", dest)
    return dest


def _newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive in the kernel's "newc" format: (name, mode, data) entries."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def initramfs() -> Path:
    """A gzip-free newc initramfs: /bin/busybox (static) and an /init that prints MARKER."""
    dest = CACHE / "initramfs.cpio"
    with _locked("initramfs"):
        if dest.exists():
            return dest
        busybox = Path("/bin/busybox").read_bytes()
        archive = _newc(
            [
                ("bin", 0o040755, b""),
                ("proc", 0o040755, b""),
                ("dev", 0o040755, b""),
                ("bin/busybox", 0o100755, busybox),
                ("init", 0o100755, INIT.encode()),
            ]
        )
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(archive)
        os.replace(tmp, dest)
    return dest


def placeholder_seed(name: str):
    """A seed ISO's contents for boots that never read it (the initramfs ignores cloud-init):
    the drivers only need a real file labelled cidata to attach."""
    from vmctl import cloudinit

    return cloudinit.Seed(
        instance_id=name,
        hostname=name,
        authorized_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleUserKey test",
        host_key_private=(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"
        ),
        host_key_public="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleHostKey test",
        daemon_json={},
    )


def wait_for_marker(log: Path, silence: float = 180.0, limit: float = 1800.0) -> None:
    """Until the guest's console (`log`) shows MARKER. A kernel booting on a loaded host under
    TCG is slow but keeps printing, so what this waits on is the console's progress: it fails
    when the console has said nothing new for `silence` seconds (a hung or dead guest), or at
    `limit`, never at a boot time guessed for a quiet machine."""
    began = last_change = time.monotonic()
    size = -1
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        if MARKER in text:
            return
        now = time.monotonic()
        if len(text) != size:
            size, last_change = len(text), now
        if now - last_change > silence or now - began > limit:
            break
        time.sleep(0.2)
    waited = f"{now - began:.0f} s, the last {now - last_change:.0f} s without a new line"
    pytest.fail(f"the guest printed no {MARKER} in {waited}; serial log:\n{text[-2000:]}")
