"""The user's folders in the VM, the pure half (vmctl/shares.py): what is shared by default
on each platform, at which path, over which transport, and how the drivers, the guest's fstab
and the deploy stage's script say it (golden files; the libvirt domain checked against
libvirt's own schema). No VM boots here: the transports meet a real guest in
test_vmctl_shares_vm.py."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest

from vmctl import shares
from vmctl.drivers import virtiofs
from vmctl.drivers.domainxml import domain_xml
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
        ("qemu", "linux", None, "virtiofs"),  # the qemu driver runs virtiofsd itself
        ("libvirt", "darwin", None, "sftp"),  # the downloaded image's cloud kernel has no 9p
        ("qemu", "win32", None, "sftp"),
        ("libvirt", "linux", "sftp", "sftp"),
        ("libvirt", "linux", "9p", "9p"),
    ],
)
def test_the_transport_as_lima_chooses_it(driver, platform, override, chosen):
    assert shares.choose_transport(driver, platform, override) == chosen


def test_a_linux_user_without_root_shares_over_sftp_so_files_stay_theirs():
    assert shares.choose_transport("libvirt", "linux", None, root=False) == "sftp"
    assert shares.choose_transport("qemu", "linux", "virtiofs", root=False) == "virtiofs"


@pytest.mark.parametrize(
    ("driver", "platform", "override", "words"),
    [
        ("qemu", "win32", "9p", "QEMU on Windows has no 9p: use sftp"),
        ("qemu", "darwin", "virtiofs", "virtiofs needs a Linux host (virtiofsd): use sftp"),
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


def test_virtiofs_in_the_qemu_command_line_and_its_virtiofsd():
    argv = qemu_argv(spec("virtiofs"), qemu="qemu", qmp="unix:/q", pidfile=VM / "qemu.pid")
    shared = argv[argv.index("-object") : argv.index("-netdev")]
    assert shared == [
        "-object", "memory-backend-memfd,id=vmctl-mem,size=1024M,share=on",
        "-numa", "node,memdev=vmctl-mem",
        "-chardev", f"socket,id=vmctl0,path={VM}/vmctl0.sock",
        "-device", "vhost-user-fs-pci,queue-size=1024,chardev=vmctl0,tag=vmctl0",
        "-chardev", f"socket,id=vmctl1,path={VM}/vmctl1.sock",
        "-device", "vhost-user-fs-pci,queue-size=1024,chardev=vmctl1,tag=vmctl1",
    ]  # fmt: skip
    odd = Share("/srv/a,b\\c", "/srv/a,b\\c", False, "vmctl2")
    assert virtiofs.virtiofsd_argv(odd, Path("/s.sock")) == [
        "/usr/lib/qemu/virtiofsd", "--socket-path=/s.sock",
        "-o", "source=/srv/a\\,b\\\\c", "-o", "cache=auto",
    ]  # fmt: skip


def test_a_virtiofsd_that_cannot_start_says_why_and_leaves_nothing(tmp_path):
    missing = replace(spec("virtiofs"), shares=(Share("/no/such/dir", "/x", False, "vmctl0"),))
    with pytest.raises(VmctlError) as caught:
        virtiofs.start(missing, tmp_path, timeout=60, detached={})
    assert "virtiofsd did not start for the shared folder /no/such/dir" in str(caught.value)
    assert "/no/such/dir" in (tmp_path / "vmctl0.virtiofsd.log").read_text()
    assert not (tmp_path / "vmctl0.sock").exists()


def test_the_guests_fstab_escapes_blanks_and_never_blocks_a_boot():
    before = "x-systemd.before=vmctl-agent.service"
    assert shares.fstab(SHARED, "virtiofs") == (
        f"vmctl0 /home/user virtiofs rw,nofail,{before} 0 0\n"
        f"vmctl1 /srv/data\\040sets virtiofs ro,nofail,{before} 0 0\n"
    )
    ninep = shares.fstab(SHARED, "9p").splitlines()[1]
    assert ninep == (
        "vmctl1 /srv/data\\040sets 9p trans=virtio,version=9p2000.L,msize=262144,cache=mmap,"
        f"ro,nofail,{before} 0 0"
    )
    assert shares.fstab(SHARED, "sftp") == ""


def test_mount_and_unmount_settings_edit_one_entry_per_folder():
    mounts = shares.edit((), ["/srv/code", "/data/set:ro"], [], "linux")
    assert mounts == ("/srv/code", "/data/set:ro")
    assert shares.edit(mounts, ["/srv/code/:ro"], [], "linux") == ("/srv/code:ro", "/data/set:ro")
    assert shares.edit(mounts, [], ["/data/set"], "linux") == ("/srv/code",)
    with pytest.raises(VmctlError) as caught:
        shares.edit(mounts, [], ["/elsewhere"], "linux")
    assert "/elsewhere is not in the shared folders (they are: /srv/code, /data/set)" in str(
        caught.value
    )


def test_the_guest_script_rewrites_only_our_fstab_lines_and_mounts_before_the_engine(tmp_path):
    """Run for real with sh against a copy of an fstab: the user's own lines are kept, ours
    replaced (never twice after two starts)."""
    fstab = tmp_path / "fstab"
    fstab.write_text("/dev/vda / ext4 rw 0 0\nvmctl7 /old virtiofs rw 0 0\n")
    lines = shares.guest_script(SHARED, "virtiofs")
    edits = [line.replace("/etc/fstab", str(fstab)) for line in lines[:2]]
    for _ in range(2):
        subprocess.run(["sh", "-ec", "; ".join(edits)], check=True)
    assert fstab.read_text() == "/dev/vda / ext4 rw 0 0\n" + shares.fstab(SHARED, "virtiofs")
    assert lines[2:5] == [
        "mkdir -p /home/user",
        "mountpoint -q /home/user || mount /home/user || { echo 'the shared folder /home/user "
        "did not mount in the VM over virtiofs (one added while the VM ran is attached at its next "
        "boot: vmctl stop, vmctl start; else vmctl ssh -- sudo dmesg says why)' >&2; exit 1; }",
        "echo 4096 > /sys/class/bdi/$(mountpoint -d /home/user)/read_ahead_kb || true",
    ]
    assert not any("read_ahead_kb" in line for line in shares.guest_script(SHARED, "9p"))
    assert shares.guest_script(SHARED, "9p")[0].startswith("modprobe -q 9pnet_virtio || { echo")
    assert shlex.quote(shares.NO_9P) in shares.guest_script(SHARED, "9p")[0]
    assert shares.guest_script((), "virtiofs") == [
        f"sed -i -E '/{shares.OUR_FSTAB_LINES}/d' /etc/fstab"
    ]


@pytest.mark.parametrize(
    ("mounts", "add", "words"),
    [
        ((), "/", "/ cannot be shared: the VM's own / is there, and a share at the same path "
                  "would hide it"),
        ((), "/usr/local/src", "/usr/local/src cannot be shared: the VM's own /usr is there"),
        ((), "/var/lib/docker:ro", "the VM's own /var/lib is there"),
        ((), "/var", "/var cannot be shared: the VM's own /var is there"),
        (("/srv/code",), "/srv/code/app", "/srv/code/app is inside /srv/code, which is shared "
                                          "too: it is in the VM already"),
        (("/srv/code/app:ro",), "/srv:ro", "/srv/code/app is inside /srv, which is shared too"),
    ],
)  # fmt: skip
def test_a_folder_that_cannot_be_shared_is_refused_in_words(mounts, add, words):
    with pytest.raises(VmctlError) as caught:
        shares.edit(mounts, [add], [], "linux")
    assert words in str(caught.value)


def test_a_folder_inside_a_share_may_be_shared_with_other_access_and_windows_paths_too():
    assert shares.edit(("/srv/code",), ["/srv/code/keep:ro"], [], "linux") == (
        "/srv/code", "/srv/code/keep:ro")  # fmt: skip
    assert shares.edit((), ["/var/folders"], [], "darwin") == ("/var/folders",)
    with pytest.raises(VmctlError, match="C:\\\\src\\\\a is inside C:\\\\src"):
        shares.edit(("C:\\src",), ["C:\\src\\a"], [], "win32")


def test_on_the_host_a_share_must_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(VmctlError, match="file is not a folder: only folders can be shared"):
        shares.edit((), [str(tmp_path / "file")], [], "linux", on_host=True)
    assert shares.edit((), [str(tmp_path)], [], "linux", on_host=True) == (str(tmp_path),)
