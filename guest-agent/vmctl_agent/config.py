"""The agent's configuration: dockerd's daemon.json keys, overridden by command-line flags."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vmctl_agent.errors import AgentError

DEFAULT_DATA_ROOT = "/var/lib/vmctl-agent"
# Ours, beside dockerd's keys: the host's folders shared into the VM at the same path. Given,
# a bind of any other path is refused as Docker Desktop refuses it ("mounts denied").
SHARED_KEY = "vmctl-shared-paths"
# Ours too: the host's system. "windows": binds name host folders as the docker CLI on Windows
# sends them (C:\Users\me\src), which the VM sees as /c/Users/me/src.
HOST_OS_KEY = "vmctl-host-os"
HOST_SYSTEMS = ("linux", "macos", "windows")
_KNOWN_KEYS = {
    "registry-mirrors", "insecure-registries", "data-root", "group", "bridge", "host-gateway-ip",
    SHARED_KEY, HOST_OS_KEY,
}  # fmt: skip
# dockerd gives its socket to this group when it exists; naming it explicitly makes it required.
DEFAULT_GROUP = "docker"


@dataclass(frozen=True)
class AgentConfig:
    data_root: Path = Path(DEFAULT_DATA_ROOT)
    registry_mirrors: tuple[str, ...] = ()
    insecure_registries: tuple[str, ...] = ()
    group: str = DEFAULT_GROUP  # owner group of unix sockets (mode 0660), as dockerd's -G
    group_required: bool = False
    # The default bridge (docker0) only where asked for ("bridge": "docker0", as the VM's
    # daemon.json says): an agent run straight on a Linux host never touches its network.
    default_bridge: bool = False
    host_gateway_ip: str = ""  # what --add-host NAME:host-gateway means (default: the bridge's)
    ignored_keys: tuple[str, ...] = field(default=())
    shared_paths: tuple[str, ...] = ()  # none: every path in the VM may be bound
    windows_paths: bool = False  # C:\... in binds means /c/... (the host is Windows)


def load(
    path: str | None,
    *,
    data_root: str | None = None,
    mirrors: list[str] | None = None,
    insecure: list[str] | None = None,
    group: str | None = None,
    bridge: str | None = None,
    shared: list[str] | None = None,
) -> AgentConfig:
    """daemon.json (if given) with flags on top; flags add to the file's lists, as dockerd's do."""
    raw = _read(path) if path else {}
    root = data_root or raw.get("data-root") or DEFAULT_DATA_ROOT
    file_mirrors = _strings(raw, "registry-mirrors", path)
    file_insecure = _strings(raw, "insecure-registries", path)
    for url in [*file_mirrors, *(mirrors or [])]:
        if not url.startswith(("http://", "https://")):
            raise AgentError(
                f"invalid registry mirror {url!r}: it must start with http:// or https://"
            )
    file_group = raw.get("group")
    if file_group is not None and not isinstance(file_group, str):
        raise AgentError(f"group in {path} must be a string")
    chosen_group = group or file_group
    chosen_bridge = bridge or raw.get("bridge") or "none"
    if chosen_bridge not in ("docker0", "none"):
        raise AgentError(
            f'bridge {chosen_bridge!r} is not supported: "docker0" (the default bridge '
            'network) or "none"'
        )
    gateway_ip = raw.get("host-gateway-ip") or ""
    if not isinstance(gateway_ip, str):
        raise AgentError(f"host-gateway-ip in {path} must be a string")
    host_os = raw.get(HOST_OS_KEY, "linux")
    if host_os not in HOST_SYSTEMS:
        raise AgentError(f"{HOST_OS_KEY} in {path} must be one of {', '.join(HOST_SYSTEMS)}")
    return AgentConfig(
        data_root=Path(root),
        group=chosen_group or DEFAULT_GROUP,
        group_required=bool(chosen_group),
        default_bridge=chosen_bridge == "docker0",
        host_gateway_ip=gateway_ip,
        registry_mirrors=tuple(dict.fromkeys([*file_mirrors, *(mirrors or [])])),
        insecure_registries=tuple(dict.fromkeys([*file_insecure, *(insecure or [])])),
        ignored_keys=tuple(sorted(set(raw) - _KNOWN_KEYS)),
        shared_paths=_shared(_strings(raw, SHARED_KEY, path), shared or []),
        windows_paths=host_os == "windows",
    )


def _shared(*lists: list[str]) -> tuple[str, ...]:
    paths = [p for paths in lists for p in paths]
    for p in paths:
        if not p.startswith("/"):
            raise AgentError(f"shared path {p!r} must be absolute")
    return tuple(dict.fromkeys(p.rstrip("/") or "/" for p in paths))


def _read(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise AgentError(f"config file {path} does not exist") from None
    except ValueError as e:
        raise AgentError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise AgentError(f"config file {path} must hold a JSON object")
    return data


def _strings(raw: dict, key: str, path: str | None) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AgentError(f"{key} in {path} must be a list of strings")
    return value
