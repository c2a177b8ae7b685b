"""Provisioning: a cloud-init NoCloud seed (user-data, meta-data) on an ISO labelled `cidata`,
written with pycdlib so it is made the same way on macOS, Windows and Linux.

Pure builders return bytes; `write_seed_iso` is the only thing that touches the disk. The
user-data is JSON, which is YAML too, so nothing here needs a YAML library.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pycdlib

AGENT_PATH = "/usr/local/lib/vmctl/vmctl-agent.pyz"
AGENT_SOCKET = "/run/vmctl-agent.sock"
DAEMON_JSON = "/etc/vmctl/daemon.json"
USER = "vmctl"
ENGINE_GROUP = "docker"  # owns the engine's socket (0660), as dockerd's -G; USER is a member


@dataclass(frozen=True)
class Seed:
    """What the guest learns on first boot."""

    instance_id: str
    hostname: str
    authorized_key: str  # the user's public key, to log in as USER
    host_key_private: str  # the VM's own ed25519 host key, made and pinned on the host
    host_key_public: str
    daemon_json: dict


def agent_unit() -> str:
    """The engine's systemd unit: it starts once the host has copied the agent in."""
    return f"""[Unit]
Description=vmctl container engine (Docker Engine API on {AGENT_SOCKET})
After=network-online.target
ConditionPathExists={AGENT_PATH}

[Service]
ExecStart=/usr/bin/python3 -I -S {AGENT_PATH} serve \\
    --listen unix://{AGENT_SOCKET} --config {DAEMON_JSON}
Restart=on-failure
RestartSec=1
KillMode=process
Delegate=yes

[Install]
WantedBy=multi-user.target
"""


def user_data(seed: Seed) -> bytes:
    """#cloud-config: the user and its key, the pinned host key, the agent's unit and config.
    No runcmd: vmctl enables the engine (and fstrim.timer) over SSH when it deploys the agent,
    and every command here would cost the emulated first boot seconds."""
    config = {
        "hostname": seed.hostname,
        "preserve_hostname": False,
        "groups": [ENGINE_GROUP],
        "users": [
            {
                "name": USER,
                "groups": ENGINE_GROUP,
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": [seed.authorized_key],
            }
        ],
        "disable_root": False,
        "ssh_deletekeys": True,
        "ssh_genkeytypes": ["ed25519"],  # none made: the seed's key is already in place
        "ssh_keys": {
            "ed25519_private": seed.host_key_private,
            "ed25519_public": seed.host_key_public,
        },
        "write_files": [
            {"path": "/etc/systemd/system/vmctl-agent.service", "content": agent_unit()},
            {"path": DAEMON_JSON, "content": json.dumps(seed.daemon_json, indent=1) + "\n"},
        ],
    }
    return b"#cloud-config\n" + json.dumps(config, indent=1, sort_keys=True).encode() + b"\n"


def meta_data(seed: Seed) -> bytes:
    data = {"instance-id": seed.instance_id, "local-hostname": seed.hostname}
    return json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"


def write_seed_iso(seed: Seed, dest: Path) -> Path:
    """The NoCloud seed ISO (label `cidata`, Joliet and Rock Ridge), written atomically."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, data in (("user-data", user_data(seed)), ("meta-data", meta_data(seed))):
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"/{name.upper().replace('-', '_')}.;1",
            rr_name=name,
            joliet_path=f"/{name}",
        )
    tmp = dest.with_name(f".{dest.name}.tmp")
    with open(tmp, "wb") as out:
        iso.write_fp(out)
        out.flush()
        os.fsync(out.fileno())
    iso.close()
    os.replace(tmp, dest)
    return dest
