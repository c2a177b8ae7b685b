"""Create fields the engine does not honour yet, refused with a 400 that names them.

A field accepted and ignored is a silent failure (a bind mount that never happens loses the
user's data with the container), so each one is refused until it is implemented. Whoever
implements a field deletes its row: one row per field, nothing else to touch. A field sent with
its zero value (None, false, 0, "", [], {}) is always accepted: the docker CLI, compose and
docker-py send every field, mostly empty. An object's fields have rows of their own.
"""

from __future__ import annotations

from vmctl_agent.api.http import ApiError

# (field, what it asks for, non-zero values that mean what the engine does anyway)
CREATE_FIELDS: tuple[tuple[str, str, tuple], ...] = (
    ("Config.Domainname", "a domain name", ()),
    ("Config.NetworkDisabled", "disabling the network", ()),
    ("HostConfig.Annotations", "annotations", ()),
    ("HostConfig.BlkioDeviceReadBps", "block I/O limits", ()),
    ("HostConfig.BlkioDeviceReadIOps", "block I/O limits", ()),
    ("HostConfig.BlkioDeviceWriteBps", "block I/O limits", ()),
    ("HostConfig.BlkioDeviceWriteIOps", "block I/O limits", ()),
    ("HostConfig.BlkioWeight", "block I/O weights", ()),
    ("HostConfig.BlkioWeightDevice", "block I/O weights", ()),
    ("HostConfig.Cgroup", "another container's cgroup", ()),
    ("HostConfig.CgroupParent", "a cgroup parent", ()),
    ("HostConfig.CpuCount", "a CPU count", ()),
    ("HostConfig.CpuPercent", "a CPU percentage", ()),
    ("HostConfig.CpuPeriod", "a CPU CFS period", ()),
    ("HostConfig.CpuQuota", "a CPU CFS quota", ()),
    ("HostConfig.CpuRealtimePeriod", "a real-time CPU period", ()),
    ("HostConfig.CpuRealtimeRuntime", "a real-time CPU runtime", ()),
    ("HostConfig.DeviceCgroupRules", "device cgroup rules", ()),
    ("HostConfig.DeviceRequests", "device requests (GPUs)", ()),
    ("HostConfig.IOMaximumBandwidth", "an I/O bandwidth limit", ()),
    ("HostConfig.IOMaximumIOps", "an I/O operations limit", ()),
    ("HostConfig.Isolation", "an isolation technology", ("default",)),
    ("HostConfig.KernelMemory", "a kernel memory limit", ()),
    ("HostConfig.KernelMemoryTCP", "a kernel TCP memory limit", ()),
    ("HostConfig.Links", "links", ()),
    ("HostConfig.LogConfig.Type", "another log driver", ("json-file", "none")),
    ("HostConfig.MaskedPaths", "masked paths", ()),
    ("HostConfig.MemoryReservation", "a memory reservation", ()),
    ("HostConfig.OomScoreAdj", "an OOM score adjustment", ()),
    ("HostConfig.ReadonlyPaths", "read-only paths", ()),
    ("HostConfig.StorageOpt", "storage options", ()),
    ("HostConfig.UsernsMode", "a user namespace mode", ("host",)),
    ("NetworkingConfig.EndpointsConfig.*.GwPriority", "a gateway priority", ()),
)

# Docker's log drivers: another of these is "not supported yet"; any other name is unknown.
LOG_DRIVERS = (
    "json-file", "local", "none", "syslog", "journald", "gelf", "fluentd", "awslogs",
    "splunk", "etwlogs", "gcplogs", "logentries",
)  # fmt: skip
# --security-opt values that ask for no more than the engine does (it loads no seccomp or
# AppArmor profile and has no SELinux labels).
SECURITY_OPTS = ("seccomp=unconfined", "seccomp:unconfined", "apparmor=unconfined")
SECURITY_OPTS += ("apparmor:unconfined", "label=disable", "label:disable")


def check_create(body: dict) -> None:
    """Raise a 400 naming the first create field the engine would not honour."""
    document = {"Config": body, "HostConfig": body.get("HostConfig") or {}}
    document["NetworkingConfig"] = body.get("NetworkingConfig") or {}
    _check_log_driver(document["HostConfig"])
    for path, what, accepted in CREATE_FIELDS:
        for where, value in _values(document, path.split(".")):
            if not is_zero(value) and value not in accepted:
                raise ApiError(400, f"{where} is not supported by this engine yet ({what})")
    for opt in document["HostConfig"].get("SecurityOpt") or ():
        if not opt.startswith("no-new-privileges") and opt not in SECURITY_OPTS:
            raise ApiError(400, f"HostConfig.SecurityOpt {opt!r} is not supported yet")


def _check_log_driver(host: dict) -> None:
    driver = (host.get("LogConfig") or {}).get("Type") or ""
    if isinstance(driver, str) and driver and driver not in LOG_DRIVERS:
        raise ApiError(400, f"logger: no log driver named '{driver}' is registered")


def _values(document, keys: list[str], where: str = ""):
    """(path, value) at a dotted path; `*` stands for each key of an object (then named)."""
    if not keys:
        yield where, document
        return
    if not isinstance(document, dict):
        return
    key, rest = keys[0], keys[1:]
    names = list(document) if key == "*" else [key]
    for name in names:
        if document.get(name) is not None:
            yield from _values(document[name], rest, f"{where}.{name}" if where else name)


def is_zero(value) -> bool:
    """None, false, 0, "", [] or {} (a map with keys is not: {"/run": ""} asks for a tmpfs)."""
    return value is None or value is False or value == 0 or value in ("", [], {})
