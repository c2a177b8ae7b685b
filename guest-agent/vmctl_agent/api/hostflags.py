"""HostConfig's isolation and resource fields (`--init`, `--read-only`, `--shm-size`,
`--ulimit`, `--sysctl`, `--pid`, `--uts`, `--ipc`, `--cgroupns`, `--runtime`, `--privileged`,
`--device`, `--cpuset-*`, `--memory-swap*`, `--oom-kill-disable`, `--log-*`) read into create
options: each checked for its JSON type here, and for its meaning by the runtime."""

from __future__ import annotations

from vmctl_agent.api.http import ApiError
from vmctl_agent.runtime import devices, ulimits

SWAPPINESS_DISCARDED = (
    "Your kernel does not support memory swappiness capabilities or the cgroup is not "
    "mounted. Memory swappiness discarded."
)
OOM_KILL_DISABLE_DISCARDED = (
    "Your kernel does not support OomKillDisable. OomKillDisable discarded."
)
OOM_KILL_WITHOUT_MEMORY = (
    "OOM killer is disabled for the container, but no memory limit is set, this can result "
    "in the system running out of resources."
)
RECORDED_CONFIG = ("AttachStdin", "AttachStdout", "AttachStderr", "ArgsEscaped", "OnBuild", "Shell")
RECORDED_HOST = ("ConsoleSize", "ContainerIDFile", "VolumeDriver")
# The one runtime there is: the engine's own, which does what runc does; dockerd's name for
# it and ours are both taken, as a client moved from dockerd asks for "runc".
RUNTIMES = ("runc", "vmctl")


def create_options(body: dict, host: dict, cgroup_version: int) -> tuple[dict, list[str]]:
    """CreateOptions keyword arguments, and dockerd's warnings for what cgroup v2 lacks."""
    memory, warnings = _memory(host, cgroup_version)
    cgroupns = "private" if cgroup_version == 2 else "host"
    runtime = host.get("Runtime") or body.get("Runtime") or ""
    _check_runtime(runtime)
    shm_size = int(host.get("ShmSize") or 0)
    if shm_size < 0:
        raise ApiError(400, "SHM size can not be less than 0")
    return {
        **memory,
        "cpuset_cpus": str(host.get("CpusetCpus") or ""),
        "cpuset_mems": str(host.get("CpusetMems") or ""),
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
        "console_size": _console_size(host.get("ConsoleSize")),
        "recorded": _recorded(body, host),
    }, warnings


def _console_size(value) -> tuple[int, ...]:
    """[rows, columns] of `docker run -t`'s terminal, or nothing ([0, 0] too)."""
    if not value or not any(value):
        return ()
    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(n, int) for n in value):
        raise ApiError(400, "HostConfig.ConsoleSize must be [height, width]")
    return tuple(value)


def _recorded(body: dict, host: dict) -> dict:
    """What dockerd keeps only to show back: the client's attach flags, a builder's OnBuild,
    Shell and ArgsEscaped (for a commit), the CLI's ContainerIDFile, the volume driver (the
    volumes room uses it) and the console size."""
    config = {k: body[k] for k in RECORDED_CONFIG if body.get(k) is not None}
    return {"Config": config, "HostConfig": {k: host[k] for k in RECORDED_HOST if host.get(k)}}


def _memory(host: dict, cgroup_version: int) -> tuple[dict, list[str]]:
    """--memory-swap, --memory-swappiness and --oom-kill-disable; the last two are v1 files
    only, so on v2 they are dropped with dockerd's warnings, as dockerd drops them."""
    swappiness = host.get("MemorySwappiness")
    swappiness = None if swappiness in (None, -1) else int(swappiness)
    oom, warnings = bool(host.get("OomKillDisable")), []
    if cgroup_version == 2 and swappiness is not None:
        swappiness, warnings = None, [*warnings, SWAPPINESS_DISCARDED]
    if cgroup_version == 2 and oom:
        oom, warnings = False, [*warnings, OOM_KILL_DISABLE_DISCARDED]
    if oom and not host.get("Memory"):
        warnings.append(OOM_KILL_WITHOUT_MEMORY)
    options = {"memory_swap": int(host.get("MemorySwap") or 0), "memory_swappiness": swappiness}
    return {**options, "oom_kill_disable": oom}, warnings


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
