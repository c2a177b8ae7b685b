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
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The docker CLI talks to our engine. Debian 12 ships it only inside docker.io, whose daemon
# we do not want started: policy-rc.d keeps the package from starting services.
if ! command -v docker >/dev/null; then
  echo "==> apt-get install docker.io (for its docker CLI; its daemon is not started)"
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
