#!/usr/bin/env bash
# The quick start's main job: install what is missing, then show the engine pulling an image.
#
# Until the VM lands, the engine (vmctl-agent) runs right here: we start a real OCI registry on
# loopback, build a small hello-world image into it, pull it twice (the second pull finds it
# cached), and list it. No internet is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python scripts/demo.py "$@"
