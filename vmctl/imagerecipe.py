"""The offline base image's recipe, as data and one shell script (the pure half of
`vmctl.image.build`): Debian 12 minbase with the generic kernel (the cloud kernel has no 9p),
cloud-init, sshd and python3, set up for a whole-disk ext4 root on /dev/vda, direct kernel boot
and a NoCloud seed.

`recipe_script` is what mmdebstrap runs; it is golden-tested, and the recipe's digest names the
cached image, so any change here makes the next `vmctl image build` build anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from vmctl.machine import DEFAULT_CMDLINE

RECIPE_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """What `build()` makes: the packages, the files written over them and the commands run
    in the finished tree. Its digest names the cached result."""

    suite: str
    packages: tuple[str, ...]
    files: tuple[tuple[str, str, int], ...]  # (path in the guest, content, mode)
    commands: tuple[str, ...]  # shell lines run in the customize hook; $root is the tree
    size_gib: int  # the base's virtual size; overlays grow it and cloud-init resizes the fs
    cmdline: str

    def digest(self) -> str:
        script = recipe_script(self)  # its wording too: the script is what runs
        blob = json.dumps([RECIPE_VERSION, asdict(self), script], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_CLOUD_CFG = """\
# vmctl: the NoCloud seed ISO is the only datasource; never probe cloud metadata servers.
datasource_list: [ NoCloud, None ]
# systemd-networkd configures the NIC (20-vmctl.network), so boot never waits on cloud-init.
network: {config: disabled}
# minbase generates no locales; C.UTF-8 is built in (/etc/default/locale).
locale: false
# No GRUB: the host boots the kernel directly. No partition table: nothing for growpart,
# resize_rootfs grows the whole-disk ext4 to the overlay's size.
grub_dpkg: {enabled: false}
growpart: {mode: 'off'}
resize_rootfs: true
manage_etc_hosts: localhost
"""

_INITRD_HOOK = """\
#!/bin/sh
# vmctl: the initrd must mount root from a virtio disk (ext4 is a module of Debian's kernel).
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
force_load virtio_pci
force_load virtio_blk
force_load ext4
"""

FILES: tuple[tuple[str, str, int], ...] = (
    ("etc/cloud/cloud.cfg.d/90_vmctl.cfg", _CLOUD_CFG, 0o644),
    (
        "etc/systemd/network/20-vmctl.network",
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n",
        0o644,
    ),
    (
        "etc/systemd/system/systemd-networkd-wait-online.service.d/vmctl.conf",
        "[Service]\nExecStart=\nExecStart=/lib/systemd/systemd-networkd-wait-online --any"
        " --timeout=30\n",
        0o644,
    ),
    (
        "etc/fstab",
        "# the whole virtio disk is ext4, no partition table (label vmctl-root)\n"
        "/dev/vda / ext4 rw,errors=remount-ro 0 0\n",
        0o644,
    ),
    ("etc/hostname", "vmctl\n", 0o644),
    ("etc/default/locale", "LANG=C.UTF-8\n", 0o644),
    ("etc/systemd/journald.conf.d/vmctl.conf", "[Journal]\nRuntimeMaxUse=16M\n", 0o644),
    (
        "etc/sysctl.d/90-vmctl.conf",
        "# THP's khugepaged raises the free-page reserve to ~45 MB (~100 MiB counted as used by\n"
        "# free(1) in a 1 GiB guest); the kernel's own default for that size is ~4 MB.\n"
        "vm.min_free_kbytes = 8192\n",
        0o644,
    ),
    ("etc/initramfs-tools/conf.d/vmctl.conf", "MODULES=list\n", 0o644),
    ("etc/initramfs-tools/hooks/vmctl", _INITRD_HOOK, 0o755),
)

COMMANDS: tuple[str, ...] = (
    "# nothing wakes up on its own: the idle guest stays well under 150 MiB",
    'chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer'
    " e2scrub_all.timer e2scrub_reap.service",
    'chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service',
    'ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"',
    "# the SSH host key comes from the seed, pinned on the host: never ship the build's own",
    'rm -f "$root"/etc/ssh/ssh_host_*',
    'chroot "$root" sh -c \'lsinitramfs /boot/initrd.img-* | grep -q "/virtio_blk.ko"\''
    ' || { echo "the initrd cannot mount a virtio root disk" >&2; exit 1; }',
)

PACKAGES: tuple[str, ...] = (
    "linux-image-amd64",  # virtio drivers and 9p (the cloud kernel has none); direct boot
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "dbus",  # hostnamectl (cloud-init sets the hostname) talks to systemd-hostnamed over D-Bus
    "systemd-resolved",  # DNS from networkd's DHCP lease
    "openssh-server",
    "python3",  # the guest agent
    "cloud-init",
    "sudo",
    "iproute2",
    "iptables",  # the engine's NAT, isolation and published ports (nft backend)
    "tini",  # /usr/bin/tini-static: the docker-init of `docker run --init`
    "ca-certificates",
    "netbase",
    "e2fsprogs",  # resize2fs, for cloud-init's resize_rootfs
    "procps",
    "kmod",
    "sshfs",  # reverse SFTP shares (`sshfs -o slave`, over vmctl's SSH connection); fuse3
)

DEFAULT_RECIPE = Recipe("bookworm", PACKAGES, FILES, COMMANDS, 2, DEFAULT_CMDLINE)


def recipe_script(recipe: Recipe) -> str:
    """The mmdebstrap hook: `$1` is the tree, `$2` the stage. As the setup hook it writes the
    files before any package is installed (so the kernel's initrd already follows them); as
    the customize hook it writes them again over what packages shipped, then runs commands."""
    lines = ["#!/bin/sh", "# vmctl base image recipe (vmctl.imagerecipe.recipe_script)", "set -eu"]
    lines += ['root="$1"', ""]
    for path, content, mode in recipe.files:
        lines += [f'mkdir -p "$root/{os.path.dirname(path)}"']
        lines += [f"cat > \"$root/{path}\" <<'VMCTL_EOF'", content.rstrip("\n"), "VMCTL_EOF"]
        lines += [f'chmod {mode:o} "$root/{path}"']
    lines += ["", '[ "$2" = customize ] || exit 0', *recipe.commands]
    return "\n".join(lines) + "\n"


def mmdebstrap_argv(recipe: Recipe, rootfs: Path, script: Path) -> list[str]:
    hook = f'sh {shlex.quote(str(script))} "$1"'
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--format=directory",
        f"--include={','.join(recipe.packages)}",
        f"--setup-hook={hook} setup",
        f"--customize-hook={hook} customize",
        recipe.suite,
        str(rootfs),
    ]
