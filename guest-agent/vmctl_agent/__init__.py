"""vmctl's guest agent: the container engine that runs inside the Linux VM.

Standard library only: it runs on the guest's Debian python3 (3.11) and is deployed as one zipapp.
Rooms, each using only those below it (import-linter's contract in pyproject.toml holds this):

    cli.py            `vmctl-agent serve|pull|images|...`
    api/              the Docker Engine API, the one door
    build/ network/ volumes/   Dockerfiles, container networks, volumes and mounts (to come)
    runtime/          containers: namespaces, cgroups, overlay roots, shims
    store/            images: pull, verify, keep, export
    config.py         daemon.json and flags
    atomic.py errors.py syscalls.py   the floor: atomic writes, the exception tree, raw syscalls
"""

__version__ = "0.1.0"
