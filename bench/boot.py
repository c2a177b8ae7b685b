#!/usr/bin/env python3
"""Boot benchmark: `vmctl start` until the engine answers through the host's docker.sock,
against a bare qemu-system boot of the same image and kernel until its sshd answers.

  ours  vmctl.vm.start() of an existing, stopped VM (the everyday start: provisioned on its
        first boot, which is timed once and printed apart) → GET /_ping through docker.sock
  bare  qemu-system-x86_64 with the same kernel, initrd, command line, CPUs, memory,
        accelerator and emulated CPU on a throwaway snapshot of that VM's disk (-snapshot),
        user networking with the same port forward → the first "SSH-2.0-" banner on that port

Runs alternate (bare, ours, bare, ours, ...) so machine noise hits both alike. At the end it
prints medians, the ratio (goal <= 1.2x), the accelerator, the guest's used memory once idle
(goal <= 150 MiB) and the engine's RSS in the guest (goal <= 30 MiB).

    python bench/boot.py [--runs 3] [--image DIR] [--workdir DIR]   (as root, Linux)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CACHE = Path(os.environ.get("VMCTL_TEST_CACHE", "/var/cache/vmctl-test"))
NAME = "bench"


def bare_boot(paths, spec_args: dict, timeout: float = 600) -> float:
    """Seconds from spawning a bare qemu-system to the guest's SSH banner."""
    from vmctl import accel
    from vmctl.drivers.qemu import find_qemu

    port = free_port()
    argv = [
        find_qemu(),
        "-name", "vmctl-bench-bare",
        "-machine", "q35", *accel.qemu_args(spec_args["accel"]),  # the same emulated CPU
        "-smp", str(spec_args["cpus"]), "-m", str(spec_args["memory"]),
        "-nodefaults", "-no-user-config", "-display", "none", "-snapshot",
        "-kernel", str(spec_args["kernel"]), "-initrd", str(spec_args["initrd"]),
        "-append", spec_args["cmdline"],
        "-drive", f"file={paths.disk},format=qcow2,if=virtio",
        "-drive", f"file={paths.seed},format=raw,if=virtio,readonly=on",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-serial", "null",
    ]  # fmt: skip
    began = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        while time.monotonic() - began < timeout:
            if qemu.poll() is not None:
                raise RuntimeError(f"bare qemu exited with {qemu.returncode}")
            if ssh_banner(port):
                return time.monotonic() - began
            time.sleep(0.2)
        raise RuntimeError("bare boot: SSH did not answer")
    finally:
        qemu.kill()
        qemu.wait()


def ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(2)
            return s.recv(16).startswith(b"SSH-2.0-")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guest_memory(vm, name: str) -> tuple[int, int]:
    """(used MiB of the whole guest, the engine's RSS in MiB) after the guest settles."""
    from vmctl.ssh import Guest

    with Guest(vm.endpoint(name)) as guest:
        time.sleep(30)  # let boot-time services finish and page cache settle
        used = guest.run(["free", "-m"]).stdout.splitlines()[1].split()[2]
        rss = guest.run(
            "ps -o rss= -p $(systemctl show -p MainPID --value vmctl-agent.service)"
        ).stdout
    return int(used), int(rss) // 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--image", type=Path, help="a built image (default: built and cached)")
    parser.add_argument("--workdir", type=Path, help="VMCTL_HOME for the run (default: temp)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vmctl-bench-boot-"))
    os.environ["VMCTL_HOME"] = str(workdir)
    from vmctl import image, vm
    from vmctl import paths as vmpaths

    built = image.load(args.image) if args.image else image.build(CACHE / "images")
    print(f"image: {built.disk.parent}")
    began = time.monotonic()
    vm.start(NAME, image=str(built.disk), cpus=2, memory_mib=1024, disk_gib=8)
    first = time.monotonic() - began
    state = vm.status(NAME)
    print(f"first start (provisioning, cloud-init): {first:.1f} s, accel {state.accel}")
    used, rss = guest_memory(vm, NAME)
    vm.stop(NAME)

    paths = vmpaths.vm(NAME)
    spec = {
        "accel": state.accel,
        "cpus": 2,
        "memory": 1024,
        "kernel": built.kernel,
        "initrd": built.initrd,
        "cmdline": built.cmdline,
    }
    ours, bare = [], []
    try:
        for run in range(args.runs):
            bare.append(bare_boot(paths, spec))
            began = time.monotonic()
            vm.start(NAME)
            ours.append(time.monotonic() - began)
            vm.stop(NAME)
            print(f"run {run + 1}: bare {bare[-1]:.1f} s, ours {ours[-1]:.1f} s", flush=True)
    finally:
        vm.delete(NAME)

    ratio = statistics.median(ours) / statistics.median(bare)
    print()
    print(f"accelerator:              {state.accel}")
    print(f"bare qemu -> SSH banner:  median {statistics.median(bare):.1f} s  {fmt(bare)}")
    print(f"vmctl start -> /_ping:    median {statistics.median(ours):.1f} s  {fmt(ours)}")
    print(f"ratio ours/bare:          {ratio:.2f}x  (goal <= 1.2x)")
    print(f"guest used memory, idle:  {used} MiB  (goal <= 150 MiB)")
    print(f"engine RSS in the guest:  {rss} MiB  (goal <= 30 MiB)")
    return 0


def fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in values) + "]"


if __name__ == "__main__":
    raise SystemExit(main())
