"""HostConfig's isolation fields (`--init`, `--read-only`, `--shm-size`, `--ulimit`,
`--sysctl`, `--pid`, `--uts`, `--ipc`, `--cgroupns`, `--runtime`, `--privileged`, `--device`)
read into create options,
each checked for its JSON type here and for its meaning by the runtime."""

from __future__ import annotations

from vmctl_agent.api.http import ApiError
from vmctl_agent.runtime import devices, ulimits

# The one runtime there is: the engine's own, which does what runc does; dockerd's name for
# it and ours are both taken, as a client moved from dockerd asks for "runc".
RUNTIMES = ("runc", "vmctl")


def create_options(body: dict, host: dict, cgroupns: str) -> dict:
    """CreateOptions keyword arguments; `cgroupns` is the engine's default mode."""
    runtime = host.get("Runtime") or body.get("Runtime") or ""
    _check_runtime(runtime)
    shm_size = int(host.get("ShmSize") or 0)
    if shm_size < 0:
        raise ApiError(400, "SHM size can not be less than 0")
    return {
        "init": bool(host.get("Init")),
        "read_only": bool(host.get("ReadonlyRootfs")),
        "shm_size": shm_size,
        "ulimits": ulimits.parse(_list(host.get("Ulimits"), "Ulimits")),
        "sysctls": _strings_map(host.get("Sysctls"), "Sysctls"),
        "pid_mode": host.get("PidMode") or "",
        "uts_mode": host.get("UTSMode") or "",
        "ipc_mode": host.get("IpcMode") or "",
        "cgroupns_mode": host.get("CgroupnsMode") or cgroupns,
        "runtime": runtime,
        "privileged": bool(host.get("Privileged")),
        "devices": devices.parse(_list(host.get("Devices"), "Devices")),
        **_log_config(host.get("LogConfig") or {}),
    }


def _log_config(config: dict) -> dict:
    """The driver ("" is dockerd's default, json-file) and its options, as strings."""
    if not isinstance(config, dict):
        raise ApiError(400, "HostConfig.LogConfig must be a JSON object")
    options = _strings_map(config.get("Config"), "LogConfig.Config")
    return {"log_driver": config.get("Type") or "json-file", "log_options": options}


def _check_runtime(name) -> None:
    if name and name not in RUNTIMES:
        raise ApiError(400, f"unknown or invalid runtime name: {name}")


def _list(value, field: str) -> list:
    if value is not None and not isinstance(value, list):
        raise ApiError(400, f"HostConfig.{field} must be a JSON array")
    return value or []


def _strings_map(value, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ApiError(400, f"HostConfig.{field} must be a JSON object of strings")
    return dict(value)
