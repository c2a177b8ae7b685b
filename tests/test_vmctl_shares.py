"""The user's folders in the VM, the pure half (vmctl/shares.py): what is shared by default
on each platform, at which path, over which transport, and how the drivers and the guest's
fstab say it (golden files; the libvirt domain checked against libvirt's own schema). No VM
boots here: the transports meet a real guest in the VM tests, once wired into `vmctl start`."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from vmctl import shares
from vmctl.drivers.libvirt import domain_xml
from vmctl.drivers.qemu import qemu_argv
from vmctl.errors import VmctlError
from vmctl.machine import MachineSpec
from vmctl.shares import Share

GOLDEN = Path(__file__).parent / "golden"
VM = Path("/home/user/.local/share/vmctl/default")
SHARED = (
    Share("/home/user", "/home/user", False, "vmctl0"),
    Share("/srv/data sets", "/srv/data sets", True, "vmctl1"),
)


def spec(transport: str) -> MachineSpec:
    return MachineSpec(
        name="vmctl-default", cpus=2, memory_mib=1024, disk=VM / "disk.qcow2",
        seed=VM / "seed.iso", serial_log=VM / "serial.log", ssh_port=2222, accel="tcg",
        shares=SHARED, share_transport=transport,
    )  # fmt: skip


def test_defaults_per_platform_as_docker_desktop_shares_them():
    linux = shares.for_settings([], "linux", "/home/me")
    assert linux == (Share("/home/me", "/home/me", False, "vmctl0"),)
    mac = [s.guest for s in shares.for_settings([], "darwin", "/Users/me")]
    assert mac == ["/Users/me", "/Volumes", "/private", "/tmp", "/var/folders"]
    (windows,) = shares.for_settings([], "win32", "C:\\Users\\me")
    assert (windows.host, windows.guest) == ("C:\\Users\\me", "/c/Users/me")


def test_mount_settings_replace_the_defaults_with_read_only_kept():
    found = shares.for_settings(["/srv/code", "/data/ro-set:ro"], "linux", "/home/me")
    assert [(s.guest, s.read_only, s.tag) for s in found] == [
        ("/srv/code", False, "vmctl0"), ("/data/ro-set", True, "vmctl1"),
    ]  # fmt: skip
    assert shares.parse_mount("D:\\work:ro", "win32") == ("D:\\work", True)
    assert shares.guest_path("D:\\work\\proj", "win32") == "/d/work/proj"


@pytest.mark.parametrize(
    ("mounts", "platform", "words"),
    [
        (["relative/dir"], "linux", "must be an absolute path: 'relative/dir'"),
        (["/a", "/a/:ro"], "linux", "/a is shared twice"),
        (["\\\\server\\share\\x"], "win32", "only folders on a drive letter can be shared"),
    ],
)
def test_bad_mount_settings_say_what_is_wrong(mounts, platform, words):
    with pytest.raises(VmctlError, match=None) as caught:
        shares.for_settings(mounts, platform, "/home/me")
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("driver", "platform", "override", "chosen"),
    [
        ("libvirt", "linux", None, "virtiofs"),
        ("qemu", "linux", None, "9p"),
        ("libvirt", "darwin", None, "9p"),
        ("qemu", "win32", None, "sftp"),
        ("libvirt", "linux", "sftp", "sftp"),
        ("libvirt", "linux", "9p", "9p"),
    ],
)
def test_the_transport_as_lima_chooses_it(driver, platform, override, chosen):
    assert shares.choose_transport(driver, platform, override) == chosen


@pytest.mark.parametrize(
    ("driver", "platform", "override", "words"),
    [
        ("qemu", "win32", "9p", "QEMU on Windows has no 9p: use sftp"),
        ("qemu", "linux", "virtiofs", "virtiofs needs libvirt on a Linux host"),
        ("libvirt", "linux", "nfs", "unknown share transport 'nfs'"),
    ],
)
def test_impossible_transports_are_refused(driver, platform, override, words):
    with pytest.raises(VmctlError) as caught:
        shares.choose_transport(driver, platform, override)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("transport", "golden"),
    [("virtiofs", "domain-shares-virtiofs.xml"), ("9p", "domain-shares-9p.xml")],
)
def test_shares_in_the_domain_match_golden_files_valid_for_libvirt(transport, golden):
    xml = domain_xml(spec(transport), uri="qemu:///system", pidfile=None, owner=(1000, 1000))
    assert xml == (GOLDEN / golden).read_text()
    conn = libvirt.open("test:///default")
    try:
        conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE).undefine()
    finally:
        conn.close()


def test_sftp_adds_no_device():
    plain = domain_xml(spec("sftp"), uri="qemu:///session", pidfile=None)
    assert "<filesystem" not in plain and "memoryBacking" not in plain
    argv = qemu_argv(spec("sftp"), qemu="qemu", qmp="unix:/q", pidfile=Path("/p"))
    assert "-virtfs" not in argv


def test_9p_in_the_qemu_command_line_matches_the_golden_file():
    argv = qemu_argv(spec("9p"), qemu="qemu", qmp="unix:/q", pidfile=Path("/p"))
    virtfs = [argv[i + 1] for i, a in enumerate(argv) if a == "-virtfs"]
    assert "\n".join(virtfs) + "\n" == (GOLDEN / "qemu-virtfs.txt").read_text()
    with pytest.raises(VmctlError, match="use --share-transport 9p, or the libvirt driver"):
        qemu_argv(spec("virtiofs"), qemu="qemu", qmp="unix:/q", pidfile=Path("/p"))


def test_the_guests_fstab_escapes_blanks_and_never_blocks_a_boot():
    assert shares.fstab(SHARED, "virtiofs") == (
        "vmctl0 /home/user virtiofs rw,nofail 0 0\n"
        "vmctl1 /srv/data\\040sets virtiofs ro,nofail 0 0\n"
    )
    ninep = shares.fstab(SHARED, "9p").splitlines()[1]
    assert ninep == (
        "vmctl1 /srv/data\\040sets 9p trans=virtio,version=9p2000.L,msize=262144,cache=mmap,"
        "ro,nofail 0 0"
    )
    assert shares.fstab(SHARED, "sftp") == ""
