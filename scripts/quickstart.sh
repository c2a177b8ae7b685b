#!/usr/bin/env bash
# The quick start's main job: install what is missing, start the services libvirt needs, build
# the guest image offline, boot the default VM, print the docker-version-style summary (Server
# linux/amd64) and run hello-world through a registry on this host's loopback. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/services.sh
exec .venv/bin/python scripts/demo.py "$@"
