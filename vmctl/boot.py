"""The hypervisor stage of a start: the base image, the VM's disk (made or grown), its
cloud-init seed, the accelerator, and the machine booted from them; and the runtime record
(ssh port, accelerator, ...) that the later stages and `vmctl status` read back."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

from vmctl import atomic, cloudinit, keys, progressbar, stages
from vmctl import config as vmconfig
from vmctl import paths as vmpaths
from vmctl.errors import VmctlError
from vmctl.machine import Driver, MachineSpec, free_port


def boot(
    paths: vmpaths.VMPaths,
    config: vmconfig.VMConfig,
    driver: Driver,
    domain: str,
    say: stages.Progress,
) -> None:
    """Make what the VM boots from (first use) and boot it as `domain`."""
    from vmctl import accel, image

    bar = progressbar.ProgressBar("base image")
    try:
        base = image.resolve(config.image, progress=bar)
    finally:
        bar.close()
    user_key = keys.ensure(paths.ssh_key, f"vmctl@{paths.name}")
    host_key = keys.ensure(paths.host_key, f"vmctl-{paths.name}")
    resize = _disk(paths, config, base, say)
    if not paths.seed.exists():
        seed = cloudinit.Seed(
            instance_id=f"vmctl-{paths.name}-{uuid.uuid4().hex[:12]}",
            hostname=f"vmctl-{paths.name}",
            authorized_key=user_key.public_openssh,
            host_key_private=host_key.private_openssh,
            host_key_public=host_key.public_openssh,
            daemon_json=config.daemon_json(),
        )
        cloudinit.write_seed_iso(seed, paths.seed)
    chosen = config.accel
    if chosen == "auto":
        chosen = accel.choose(
            accel_qemu(), base.kernel, vmpaths.images_dir() / "accel.json", progress=say
        )
    if paths.serial_log.exists():  # the console tail shown on failure is this boot's
        os.replace(paths.serial_log, paths.serial_log.with_suffix(".log.1"))
    port = free_port()
    spec = MachineSpec(
        name=domain,
        cpus=config.cpus,
        memory_mib=config.memory_mib,
        disk=paths.disk,
        seed=paths.seed,
        serial_log=paths.serial_log,
        ssh_port=port,
        accel=chosen,
        kernel=base.kernel,
        initrd=base.initrd,
        **({"cmdline": base.cmdline} if base.cmdline else {}),
        shares=existing_shares(config),
        share_transport=config.transport(),
    )
    write_runtime(
        paths,
        {
            "ssh_port": port,
            "ssh_user": cloudinit.USER,
            "engine_socket": cloudinit.AGENT_SOCKET,
            "sshd_reaches_containers": True,  # published ports: straight to the container
            "driver": config.driver,
            "accel": chosen,
            "booted_at": time.time(),
            "resize": resize,
            "docker_listen": "tcp" if sys.platform == "win32" else "unix",
        },
    )
    stages.enter(paths, "hypervisor", say)
    say(f"booting with {config.driver} ({chosen}, {config.cpus} CPUs, {config.memory_mib} MiB)")
    stages.run(paths, driver, "hypervisor", lambda: driver.boot(spec), check_alive=False)


def _disk(paths: vmpaths.VMPaths, config: vmconfig.VMConfig, base, say: stages.Progress) -> bool:
    """The VM's disk on the base image, made on first use or grown to the configured size;
    True when it grew (the guest's filesystem is to follow)."""
    from vmctl import disk

    if not paths.disk.exists():
        say(f"creating a {config.disk_gib} GiB disk on {base.disk.name}")
        disk.create_overlay(base, paths.disk, config.disk_gib)
    elif (backing := disk.info(paths.disk).backing_file) and not _same(backing, base.disk):
        say(
            f"warning: this VM's disk is built on {backing}; the image {base.disk} applies to "
            f"new VMs only (vmctl delete --name {paths.name} to start over with it)"
        )
    if paths.disk.exists() and disk.grow(paths.disk, config.disk_gib):
        say(f"the disk grew to {config.disk_gib} GiB; the guest's filesystem follows")
        return True
    return False


def existing_shares(config: vmconfig.VMConfig) -> tuple:
    """The shares to attach: each folder must exist here (the hypervisor's own error names
    neither the setting nor the fix)."""
    found = config.shares()
    for share in found:
        if not os.path.isdir(share.host):
            raise VmctlError(
                f"the shared folder {share.host} does not exist on this machine: create it, or "
                f"stop sharing it (vmctl config --unmount {share.host})"
            )
    return found


def _same(a: str | Path, b: Path) -> bool:
    return Path(a).resolve() == b.resolve()


def accel_qemu() -> str:
    from vmctl.drivers.qemu import find_qemu

    return find_qemu()


def runtime(paths: vmpaths.VMPaths) -> dict:
    """What the last boot recorded ({} before the first)."""
    try:
        return json.loads(paths.runtime.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def write_runtime(paths: vmpaths.VMPaths, data: dict) -> None:
    atomic.write_text(paths.runtime, json.dumps(data, indent=1) + "\n")
