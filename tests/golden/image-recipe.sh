#!/bin/sh
# vmctl base image recipe (vmctl.imagerecipe.recipe_script)
set -eu
root="$1"

mkdir -p "$root/etc/cloud/cloud.cfg.d"
cat > "$root/etc/cloud/cloud.cfg.d/90_vmctl.cfg" <<'VMCTL_EOF'
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
VMCTL_EOF
chmod 644 "$root/etc/cloud/cloud.cfg.d/90_vmctl.cfg"
mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/20-vmctl.network" <<'VMCTL_EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
VMCTL_EOF
chmod 644 "$root/etc/systemd/network/20-vmctl.network"
mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat > "$root/etc/systemd/system/systemd-networkd-wait-online.service.d/vmctl.conf" <<'VMCTL_EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
VMCTL_EOF
chmod 644 "$root/etc/systemd/system/systemd-networkd-wait-online.service.d/vmctl.conf"
mkdir -p "$root/etc"
cat > "$root/etc/fstab" <<'VMCTL_EOF'
# the whole virtio disk is ext4, no partition table (label vmctl-root)
/dev/vda / ext4 rw,errors=remount-ro 0 0
VMCTL_EOF
chmod 644 "$root/etc/fstab"
mkdir -p "$root/etc"
cat > "$root/etc/hostname" <<'VMCTL_EOF'
vmctl
VMCTL_EOF
chmod 644 "$root/etc/hostname"
mkdir -p "$root/etc/default"
cat > "$root/etc/default/locale" <<'VMCTL_EOF'
LANG=C.UTF-8
VMCTL_EOF
chmod 644 "$root/etc/default/locale"
mkdir -p "$root/etc/systemd/journald.conf.d"
cat > "$root/etc/systemd/journald.conf.d/vmctl.conf" <<'VMCTL_EOF'
[Journal]
RuntimeMaxUse=16M
VMCTL_EOF
chmod 644 "$root/etc/systemd/journald.conf.d/vmctl.conf"
mkdir -p "$root/etc/sysctl.d"
cat > "$root/etc/sysctl.d/90-vmctl.conf" <<'VMCTL_EOF'
# THP's khugepaged raises the free-page reserve to ~45 MB (~100 MiB counted as used by
# free(1) in a 1 GiB guest); the kernel's own default for that size is ~4 MB.
vm.min_free_kbytes = 8192
VMCTL_EOF
chmod 644 "$root/etc/sysctl.d/90-vmctl.conf"
mkdir -p "$root/etc/initramfs-tools/conf.d"
cat > "$root/etc/initramfs-tools/conf.d/vmctl.conf" <<'VMCTL_EOF'
MODULES=list
VMCTL_EOF
chmod 644 "$root/etc/initramfs-tools/conf.d/vmctl.conf"
mkdir -p "$root/etc/initramfs-tools/hooks"
cat > "$root/etc/initramfs-tools/hooks/vmctl" <<'VMCTL_EOF'
#!/bin/sh
# vmctl: the initrd must mount root from a virtio disk (ext4 is a module of Debian's kernel).
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
force_load virtio_pci
force_load virtio_blk
force_load ext4
VMCTL_EOF
chmod 755 "$root/etc/initramfs-tools/hooks/vmctl"

[ "$2" = customize ] || exit 0
# nothing wakes up on its own: the idle guest stays well under 150 MiB
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
# the SSH host key comes from the seed, pinned on the host: never ship the build's own
rm -f "$root"/etc/ssh/ssh_host_*
chroot "$root" sh -c 'lsinitramfs /boot/initrd.img-* | grep -q "/virtio_blk.ko"' || { echo "the initrd cannot mount a virtio root disk" >&2; exit 1; }
