#!/usr/bin/env python3
"""Shared-folder benchmark (issue 14's Measure): a container with a bind mount of a host folder
in a real VM, against the same work on a named volume on the VM's own disk, for each transport
this host can run.

Rows, each timed inside the container (from /proc/uptime: busybox's date has no %N), with the
guest's page cache dropped before each read-side row so reads come over the transport:

  write   a --size-mb file (dd, conv=fsync)
  read    that file back (dd to /dev/null)
  create  --small small files (a shell loop, the same on every target)
  walk    find + stat of a --files-file tree (as `git status` on a node project), made untimed

Transports: virtiofs (Linux as root), 9p (QEMU's virtfs, with vmctl's mount options), sftp
(vmctl's own: the guest's `sshfs -o slave` over the VM's SSH connection, answered by vmctl's
SFTP server, sftpserver.py, in the host agent), and sftp-server, the alternative Lima's
reverse-sshfs uses: the same guest sshfs over OpenSSH's `ssh` (what `vmctl ssh` runs),
answered by OpenSSH's own sftp-server binary on the host. That one is mounted by hand over a
subfolder of a virtiofs share (the engine binds only shared folders), and has no notification
row (host edits reach the guest by vmctl's own forwarding, not by sshfs). And 9p-default, the
issue's other alternative: vmctl's 9p share mounted again by hand with QEMU's and the kernel's
default options (`trans=virtio` alone: the kernel's msize, no cache).

Then the host-edit to container-notification latency: the median of --edits host writes of a
file until a watcher in a container (tests/tools/inotifywatch.c) prints its event.

    python bench/share.py [--transports virtiofs,9p,9p-default,sftp-server,sftp] [--size-mb 256]
                          [--files 10000] [--small 5000] [--edits 20] [--driver libvirt|qemu]
                          (as root, Linux; a VM per transport)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

ROWS = ("write", "read", "create", "walk")
NOW = "read u _ < /proc/uptime; echo $u"
ROW = 3600  # s a row (or the untimed tree) may take


def row_script(row: str, target: str, args: argparse.Namespace) -> str:
    """The shell that does one row in `target` and prints the seconds it took."""
    work = {
        "write": f"dd if=/dev/zero of={target}/big bs=1M count={args.size_mb} conv=fsync "
        "2>/dev/null",
        "read": f"dd if={target}/big of=/dev/null bs=1M 2>/dev/null",
        "create": f"mkdir {target}/small; i=0; while [ $i -lt {args.small} ]; do "
        f"echo x > {target}/small/f$i; i=$((i+1)); done",
        "walk": f"find {target}/tree -type f | xargs stat -c %s > /dev/null",
    }[row]
    return f'a=$({NOW}); {work}; b=$({NOW}); echo "$a $b"'


def tree_script(target: str, files: int) -> str:
    """An untimed tree of `files` files in 100 folders, for the walk."""
    return (
        f"i=0; while [ $i -lt {files} ]; do d={target}/tree/d$((i % 100)); "
        f"[ -d $d ] || mkdir -p $d; : > $d/f$i; i=$((i+1)); done"
    )


def measure(vm, mount: list[str], target: str, args) -> dict[str, float]:
    from uservm import ok

    def run(script: str):  # an sshfs makes a file in 50-200 ms here: 10,000 take minutes
        return ok(vm.docker("run", "--rm", *mount, "busybox", "sh", "-c", script, timeout=ROW))

    found = {}
    run(tree_script(target, args.files))
    for row in ROWS:
        ok(vm.ssh("sudo", "-n", "sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"))
        out = run(row_script(row, target, args))
        start, end = map(float, out.split())
        found[row] = end - start
        print(f"  {row:7s} {found[row]:8.2f} s", flush=True)
    return found


def latency(vm, registry, folder: Path, edits: int) -> list[float]:
    """Seconds from each host write to the container watcher's line for it."""
    import subprocess
    import time

    import watchkit
    from agentserver import docker_cli
    from uservm import ok

    watchkit.push_image(registry, watchkit.build(folder.parent / f"watch-{folder.name}"))
    name = f"bench-watch-{os.getpid()}"
    mount = ["-v", f"{folder}:{folder}"]
    ok(vm.docker("run", "-d", "--name", name, *mount, "inotify", "/bin/inotifywatch", str(folder)))
    env = {**os.environ, "DOCKER_HOST": vm.docker_host}
    logs = subprocess.Popen(
        [docker_cli(), "logs", "-f", name], stdout=subprocess.PIPE, text=True, env=env
    )
    found = []
    try:
        output = watchkit.Lines(logs.stdout)
        assert output.next() == "watching"
        for i in range(edits):
            began = time.monotonic()
            (folder / "edited.txt").write_text(f"edit {i}\n")
            while output.next() != f"a\t{folder}\tedited.txt":
                pass
            found.append(time.monotonic() - began)
            time.sleep(0.2)  # let this edit's other events pass before the next one
            while not output.queue.empty():
                output.next()
    finally:
        logs.kill()
        ok(vm.docker("rm", "-f", name))
    return found


SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def one_transport(transport: str, registry, workdir: Path, args) -> dict[str, dict]:
    import vmkit
    from uservm import ok, started

    folder = workdir / f"shared-{transport}"
    folder.mkdir()
    home = workdir / f"home-{transport}"
    lima = transport == "sftp-server"
    booted = {"sftp-server": "virtiofs", "9p-default": "9p"}.get(transport, transport)
    flags = ("--mount", str(folder), "--share-transport", booted)
    disk = vmkit.built_image().disk
    name = f"bench-share-{transport}-{os.getpid()}"
    with started(home, name, args.driver, disk, registry, *flags) as vm:
        bound_folder = folder / "over" if lima else folder
        if transport == "9p-default":
            remount_with_defaults(vm, folder)
        with reverse_sshfs(vm, bound_folder) if lima else contextlib.nullcontext():
            print(f"{transport}: bind mount of {bound_folder}", flush=True)
            bound = measure(vm, ["-v", f"{bound_folder}:{bound_folder}"], str(bound_folder), args)
        ok(vm.docker("volume", "create", "bench"))
        print(f"{transport}: named volume on the VM's disk", flush=True)
        volume = measure(vm, ["-v", "bench:/vol"], "/vol", args)
        ok(vm.docker("volume", "rm", "bench"))
        waits = [] if lima else latency(vm, registry, folder, args.edits)
        print(f"{transport}: notification latency {[round(w, 3) for w in waits]}", flush=True)
    return {"bind": bound, "volume": volume, "latency": waits}


def remount_with_defaults(vm, folder: Path) -> None:
    """vmctl's 9p share of `folder`, mounted again with nothing but `trans=virtio`."""
    from uservm import ok

    tag = next(
        line.split()[0]
        for line in ok(vm.ssh("cat", "/proc/mounts")).splitlines()
        if line.split()[1:3] == [str(folder), "9p"]
    )
    ok(vm.ssh("sudo", "-n", "sh", "-c", f"umount {folder} && mount -t 9p -o trans=virtio "
              f"{tag} {folder}"))  # fmt: skip
    print(f"9p-default: {ok(vm.ssh('grep', ' 9p ', '/proc/mounts')).strip()}", flush=True)


@contextlib.contextmanager
def reverse_sshfs(vm, folder: Path):
    """Lima's reverse-sshfs by hand: the guest's `sshfs -o slave` on `folder` (over the
    share's virtiofs), its SFTP carried by OpenSSH's ssh (`vmctl ssh`) to OpenSSH's
    sftp-server here, which answers from `folder` on the host."""
    import subprocess
    import time

    from uservm import ok

    folder.mkdir()
    mount = f"sudo -n sshfs -f -o slave,allow_other :{folder} {folder}"
    env = {**os.environ, "VMCTL_HOME": str(vm.home)}
    ssh = subprocess.Popen(
        [sys.executable, "-m", "vmctl.cli", "ssh", "--name", vm.name, "--", mount],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
    )  # fmt: skip
    server = subprocess.Popen([SFTP_SERVER], stdin=ssh.stdout, stdout=ssh.stdin)
    try:
        while f" {folder} fuse.sshfs " not in ok(vm.ssh("cat", "/proc/mounts")):
            assert ssh.poll() is None and server.poll() is None, "sshfs or sftp-server ended"
            time.sleep(0.5)
        yield
    finally:
        vm.ssh("sudo", "-n", "umount", str(folder))
        for process in (ssh, server):
            process.terminate()
            process.wait()


def report(results: dict[str, dict], args) -> None:
    print(f"\nsize {args.size_mb} MiB, walk {args.files} files, create {args.small} files")
    print(f"{'row':8s}" + "".join(f"{t + ' s':>14s}{'x volume':>10s}" for t in results))
    for row in ROWS:
        cells = ""
        for found in results.values():
            bind, volume = found["bind"][row], found["volume"][row]
            cells += f"{bind:14.2f}{bind / volume if volume else float('inf'):10.2f}"
        print(f"{row:8s}{cells}")
    waits = [statistics.median(f["latency"]) if f["latency"] else None for f in results.values()]
    medians = "".join(f"{w:14.3f}{'':10s}" if w is not None else f"{'-':>24s}" for w in waits)
    print(f"{'notify':8s}{medians}   (median s, host edit -> container's inotify)")
    print("goals: walk <= 3x the volume; big read (volume/bind time) >= 0.5x; notify <= 0.5 s")
    # each transport runs in a VM of its own, so rows are compared as ratios to that VM's volume
    default, *others = results

    def ratio(transport: str, row: str) -> float:
        found = results[transport]
        return found["bind"][row] / found["volume"][row] if found["volume"][row] else float("inf")

    for other in others:
        slower = [r for r in ROWS if ratio(default, r) > ratio(other, r)]
        said = f"slower on {', '.join(slower)}" if slower else "at least as fast on every row"
        print(f"goal: {default} (the default) against {other}, x volume: {said}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # the default first (virtiofs, as root on Linux), then each alternative the issue names
    parser.add_argument("--transports", default="virtiofs,9p,9p-default,sftp-server,sftp")
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--small", type=int, default=5000)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--driver", default="libvirt", choices=("libvirt", "qemu"))
    args = parser.parse_args()
    from registry import Registry

    workdir = Path(tempfile.mkdtemp(prefix="vmctl-bench-share-"))
    results = {}
    (workdir / "registry").mkdir()
    try:
        with Registry(workdir / "registry") as registry:
            for transport in args.transports.split(","):
                results[transport] = one_transport(transport, registry, workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the VMs are deleted on the way out
    report(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
