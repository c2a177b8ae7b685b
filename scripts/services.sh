#!/usr/bin/env bash
# Start the services vmctl's libvirt driver needs (virtlogd, then libvirtd for qemu:///system)
# on a machine without systemd, e.g. a Debian 12 container or CI runner. Run as root.
#
# Idempotent: safe to run twice, concurrently, or when the daemons already run (whoever started
# them). It returns once `virsh -c qemu:///system version` answers, or fails with the daemon's
# log tail. Where systemd runs, it starts libvirtd itself and this script only checks it answers.
set -euo pipefail

URI=qemu:///system
LOG_DIR=/var/log/libvirt
RUN_DIR=/run/libvirt
DAEMON_LOG="$LOG_DIR/libvirtd.log"      # libvirtd -d logs warnings and errors here
STDERR_LOG="$LOG_DIR/vmctl-services.log" # what the daemons print before they log anywhere
TIMEOUT=${VMCTL_SERVICES_TIMEOUT:-30}   # seconds to wait for libvirtd to answer

die() {
  echo "services.sh: $*" >&2
  exit 1
}

answers() {
  virsh -c "$URI" version >/dev/null 2>&1
}

running() {
  pgrep -x "$1" >/dev/null
}

[ "$(id -u)" -eq 0 ] || die "run as root (libvirtd for $URI is a system daemon)"
for bin in virsh virtlogd libvirtd; do
  command -v "$bin" >/dev/null || die "$bin is missing: run 'bash scripts/install.sh' first"
done

# Debian's tmpfiles.d and postinst make these; without systemd nobody did.
mkdir -p "$LOG_DIR" "$RUN_DIR" /var/lib/libvirt/qemu /var/cache/libvirt/qemu

# One run at a time: two runs racing could start two libvirtd. The daemons must not inherit
# the lock's descriptor (9>&- below), or they would hold it for ever.
exec 9>"$RUN_DIR/.vmctl-services.lock"
flock -w "$TIMEOUT" 9 || die "another services.sh has held $RUN_DIR/.vmctl-services.lock for ${TIMEOUT}s"

# Debian builds libvirtd to run QEMU as libvirt-qemu:libvirt-qemu (member of kvm) and the
# daemon expects them. vmctl's domains run QEMU as the calling user anyway.
getent group kvm >/dev/null || groupadd -r kvm
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
if ! id -u libvirt-qemu >/dev/null 2>&1; then
  useradd -r -g libvirt-qemu -G kvm -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
fi

# Without udev, /dev/kvm stays root:root 0600. libvirtd then finds KVM when it probes QEMU
# (as root) but not when it checks the device as libvirt-qemu, so it re-probes QEMU on every
# call (4 s each). Debian's udev rule gives the device to group kvm; do what it would.
if [ -c /dev/kvm ] && [ "$(stat -c %G /dev/kvm)" = root ]; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
fi

# libvirtd hands every QEMU's stdout/stderr to virtlogd: without it, domains fail to start.
if ! running virtlogd; then
  echo "==> virtlogd -d"
  virtlogd -d 9>&- 2>>"$STDERR_LOG" || die "virtlogd failed to start: see $STDERR_LOG"
fi

# Nothing more to do when libvirtd answers (started by systemd, a previous run, or anyone).
if answers; then
  exit 0
fi

if ! running libvirtd; then
  echo "==> libvirtd -d"
  libvirtd -d 9>&- 2>>"$STDERR_LOG" || die "libvirtd failed to start: see $STDERR_LOG and $DAEMON_LOG"
fi

for _ in $(seq $((TIMEOUT * 5))); do
  answers && exit 0
  sleep 0.2
done

echo "services.sh: libvirtd does not answer on $URI after ${TIMEOUT}s" >&2
for log in "$STDERR_LOG" "$DAEMON_LOG"; do
  [ -f "$log" ] && { echo "--- tail of $log" >&2; tail -n 20 "$log" >&2; }
done
virsh -c "$URI" version >&2 || true
exit 1
