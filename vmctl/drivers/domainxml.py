"""The libvirt domain for a MachineSpec (pure, golden-file tested). Choices, and why:

- Domain type from the accelerator: kvm -> `kvm`, hvf -> `hvf`, tcg -> `qemu`. The CPU is
  `host-passthrough` with an accelerator and `maximum` under TCG (every feature QEMU can
  emulate; libvirt 9.0 supports it for type `qemu`, where host-passthrough is refused).
- Networking is QEMU's user-mode stack (slirp): no root, no bridge, and the guest reaches the
  host's loopback at 10.0.2.2. libvirt 9.0's `<interface type='user'>` forwards ports only with
  passt, so the NIC and its `hostfwd=tcp:127.0.0.1:PORT-:22` go in through the
  `qemu:commandline` namespace; the port listens on the host's loopback only.
- `-pidfile` goes there too, so the host knows QEMU's pid (libvirt has no API for it).
- Under a privileged libvirtd (qemu:///system, or any local URI as root, which libvirt serves
  from the system daemon) QEMU would run as libvirt-qemu and be relabelled onto the user's
  files. A static DAC label runs it as the calling user's uid:gid with relabel='no' instead:
  it can read VMCTL_HOME wherever it is (/root, pytest's 0700 dirs) and every file keeps its
  owner. Session daemons already run QEMU as the user, so they get no label.
- The overlay is virtio qcow2 with discard='unmap', and the memballoon reports free pages:
  space and memory the guest frees go back to the host. The seed ISO is a read-only virtio
  disk: cloud-init's NoCloud finds it by its `cidata` label on any block device.
- The console is the first serial port, appended to `spec.serial_log` by QEMU itself (as
  the user, see above), so the host can tail it; the file is created before boot so its owner
  is the user even when libvirtd opens it.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

from vmctl.accel import TCG_SLOW_FEATURES
from vmctl.errors import VmctlError
from vmctl.machine import MachineSpec
from vmctl.shares import VIRTIOFSD, Share

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
DOMAIN_TYPES = {"kvm": "kvm", "hvf": "hvf", "tcg": "qemu"}
NETDEV = "vmctlnet"

ET.register_namespace("qemu", QEMU_NS)


def is_local(uri: str) -> bool:
    """A URI without a host names this machine: QEMU's pid and files are ours to see."""
    return not urlsplit(uri).netloc


def privileged(uri: str, uid: int) -> bool:
    """Whether a privileged libvirtd (QEMU as libvirt-qemu, relabelling files) serves `uri`."""
    return is_local(uri) and (urlsplit(uri).path == "/system" or uid == 0)


# ---- the domain XML (pure) ---------------------------------------------------------------


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    element.text = text
    return element


def _os(domain: ET.Element, spec: MachineSpec) -> None:
    os_ = _sub(domain, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine="q35")
    if spec.kernel is None:
        _sub(os_, "boot", dev="hd")
        return
    _sub(os_, "kernel", str(spec.kernel))
    if spec.initrd is not None:
        _sub(os_, "initrd", str(spec.initrd))
    _sub(os_, "cmdline", spec.cmdline)


def _disk(devices: ET.Element, path: Path, fmt: str, dev: str, readonly: bool) -> None:
    disk = _sub(devices, "disk", type="file", device="disk")
    driver = _sub(disk, "driver", name="qemu", type=fmt)
    if not readonly:
        driver.set("discard", "unmap")
    _sub(disk, "source", file=str(path))
    _sub(disk, "target", dev=dev, bus="virtio")
    if readonly:
        _sub(disk, "readonly")


def _devices(domain: ET.Element, spec: MachineSpec) -> None:
    devices = _sub(domain, "devices")
    _disk(devices, spec.disk, "qcow2", "vda", readonly=False)
    _disk(devices, spec.seed, "raw", "vdb", readonly=True)
    for tag, target in (("serial", "isa-serial"), ("console", "serial")):
        chardev = _sub(devices, tag, type="file")
        _sub(chardev, "source", path=str(spec.serial_log), append="on")
        _sub(chardev, "target", type=target, port="0")
    for share in spec.shares:
        _filesystem(devices, share, spec.share_transport)
    _sub(devices, "controller", type="usb", model="none")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="virtio", freePageReporting="on")


def _shared_memory(domain: ET.Element) -> None:
    """virtiofsd reads the guest's memory: it must be shared, and memfd needs no hugepages."""
    backing = _sub(domain, "memoryBacking")
    _sub(backing, "source", type="memfd")
    _sub(backing, "access", mode="shared")


def _filesystem(devices: ET.Element, share: Share, transport: str) -> None:
    """A host folder as a virtiofs or 9p device named by its tag (sftp needs no device).
    9p squashes ownership: files the guest makes belong to whoever runs QEMU, the user.
    libvirt 9.0 refuses <readonly/> for virtiofs: the guest mounts such a share ro."""
    if transport not in ("virtiofs", "9p"):
        return
    mode = "passthrough" if transport == "virtiofs" else "squash"
    fs = _sub(devices, "filesystem", type="mount", accessmode=mode)
    if transport == "virtiofs":
        _sub(fs, "driver", type="virtiofs")
        _sub(fs, "binary", path=VIRTIOFSD)
    _sub(fs, "source", dir=share.host)
    _sub(fs, "target", dir=share.tag)
    if share.read_only and transport == "9p":
        _sub(fs, "readonly")


def _qemu_args(domain: ET.Element, spec: MachineSpec, pidfile: Path | None) -> None:
    hostfwd = f"hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22"
    args = ["-netdev", f"user,id={NETDEV},{hostfwd}"]
    # JSON, as libvirt writes its own: QEMU realizes legacy-syntax -device options before JSON
    # ones, so a legacy NIC would take the PCI slot libvirt assigned to its first device.
    nic = json.dumps({"driver": "virtio-net-pci", "netdev": NETDEV}, separators=(",", ":"))
    args += ["-device", nic]
    if pidfile is not None:
        args += ["-pidfile", str(pidfile)]
    commandline = _sub(domain, f"{{{QEMU_NS}}}commandline")
    for arg in args:
        _sub(commandline, f"{{{QEMU_NS}}}arg", value=arg)


def domain_xml(
    spec: MachineSpec,
    *,
    uri: str,
    pidfile: Path | None,
    owner: tuple[int, int] | None = None,
) -> str:
    """The domain for `spec` on `uri`. `owner` (uid, gid; default: ours) is who QEMU runs as
    under a privileged daemon."""
    if spec.accel not in DOMAIN_TYPES:
        raise VmctlError(
            f"libvirt cannot use the {spec.accel!r} accelerator: choose kvm, hvf or tcg, "
            "or use the qemu driver (--driver qemu)"
        )
    uid, gid = owner if owner is not None else (os.geteuid(), os.getegid())
    domain = ET.Element("domain", type=DOMAIN_TYPES[spec.accel])
    _sub(domain, "name", spec.name)
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    if spec.shares and spec.share_transport == "virtiofs":
        _shared_memory(domain)
    _sub(domain, "vcpu", str(spec.cpus))
    _os(domain, spec)
    features = _sub(domain, "features")
    _sub(features, "acpi")  # the power button shutdown() presses
    _sub(features, "apic")
    cpu = _sub(domain, "cpu", mode="maximum" if spec.accel == "tcg" else "host-passthrough")
    if spec.accel == "tcg":
        for feature in TCG_SLOW_FEATURES:
            _sub(cpu, "feature", policy="disable", name=feature)
    _sub(domain, "clock", offset="utc")
    for event, action in (("poweroff", "destroy"), ("reboot", "restart"), ("crash", "destroy")):
        _sub(domain, f"on_{event}", action)
    _devices(domain, spec)
    if privileged(uri, uid):
        label = _sub(domain, "seclabel", type="static", model="dac", relabel="no")
        _sub(label, "label", f"+{uid}:+{gid}")
    _qemu_args(domain, spec, pidfile)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"
