"""/_ping, /version and /info: what `docker version` and `docker info` show. The server is
whatever machine the agent runs on (in the product, the Linux VM: linux/amd64)."""

from __future__ import annotations

import json
import os
import platform as _platform
import socket
import sys
from pathlib import Path

from vmctl_agent import __version__
from vmctl_agent.api.http import API_VERSION, MIN_API_VERSION, Response, json_response
from vmctl_agent.store.content import tree_size
from vmctl_agent.store.manifest import Platform

BUILD_TIME = "2026-11-28T00:00:00.000000000+00:00"


def ping(engine, request) -> Response:
    headers = {
        "Api-Version": API_VERSION,
        "Ostype": "linux",
        "Docker-Experimental": "false",
        "Cache-Control": "no-cache, no-store, must-revalidate",
        "Pragma": "no-cache",
        "Swarm": "inactive",
    }
    return Response(200, b"OK", "text/plain; charset=utf-8", headers)


def version(engine, request) -> Response:
    details = _details()
    as_text = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in details.items()}
    engine_component = {"Name": "Engine", "Version": __version__, "Details": as_text}
    return json_response(
        {
            "Platform": {"Name": "vmctl engine"},
            "Components": [engine_component],
            "Version": __version__,
            **details,
        }
    )


def _details() -> dict:
    return {
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "vmctl",
        "GoVersion": f"python{_platform.python_version()}",
        "Os": "linux",
        "Arch": Platform.native().architecture,
        "KernelVersion": os.uname().release,
        "Experimental": False,
        "BuildTime": BUILD_TIME,
    }


def info(engine, request) -> Response:
    containers = engine.runtime.list(all=True)
    running = sum(c.state.running for c in containers)
    config = engine.config
    return json_response(
        {
            "ID": _machine_id(),
            "Containers": len(containers),
            "ContainersRunning": running,
            "ContainersPaused": 0,
            "ContainersStopped": len(containers) - running,
            "Images": len(engine.images.list()),
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
            "Plugins": {
                "Volume": ["local"],
                "Network": ["bridge", "host", "null"],
                "Log": ["json-file"],
            },
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "PidsLimit": True,
            "OomKillDisable": False,
            "IPv4Forwarding": False,
            "Debug": False,
            "NFd": len(os.listdir("/proc/self/fd")),
            "NGoroutines": 0,
            "SystemTime": _now(),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": str(engine.runtime.cgroups.version),
            "KernelVersion": os.uname().release,
            "OperatingSystem": _os_name(),
            "OSVersion": _os_release().get("VERSION_ID", ""),
            "OSType": "linux",
            "Architecture": os.uname().machine,
            "NCPU": os.cpu_count() or 1,
            "MemTotal": _mem_total(),
            "DockerRootDir": str(config.data_root),
            "Name": socket.gethostname(),
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": __version__,
            "Runtimes": {"vmctl": {"path": sys.argv[0]}},
            "DefaultRuntime": "vmctl",
            "Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False},
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "SecurityOptions": ["name=no-new-privileges"],
            "Warnings": _warnings(engine),
            "RegistryConfig": _registry_config(config),
        }
    )


def _registry_config(config) -> dict:
    cidrs = [c for c in config.insecure_registries if "/" in c] + ["127.0.0.0/8", "::1/128"]
    names = [n for n in config.insecure_registries if "/" not in n]
    index = {
        "docker.io": {
            "Name": "docker.io",
            "Mirrors": list(config.registry_mirrors),
            "Secure": True,
            "Official": True,
        }
    }
    for name in names:
        index[name] = {"Name": name, "Mirrors": [], "Secure": False, "Official": False}
    return {
        "InsecureRegistryCIDRs": cidrs,
        "IndexConfigs": index,
        "Mirrors": list(config.registry_mirrors),
    }


def _now() -> str:
    from vmctl_agent.runtime.logs import now

    return now()


def _os_release() -> dict[str, str]:
    try:
        lines = Path("/etc/os-release").read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.partition("=") for line in lines if "=" in line)
    return {k: v.strip('"') for k, _, v in pairs}


def _os_name() -> str:
    return _os_release().get("PRETTY_NAME", "Linux")


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return Path(path).read_text().strip()
        except OSError:
            continue
    return "vmctl"


def disk_usage(engine, request) -> Response:
    """GET /system/df: what `docker system df` sums up."""
    from vmctl_agent.api import build as build_api
    from vmctl_agent.api import images as image_api
    from vmctl_agent.api import listing
    from vmctl_agent.api import volumes as volume_api

    images = json.loads(image_api.list_(engine, request).body)
    containers = engine.runtime.list(all=True)
    users: dict[str, int] = {}
    for c in containers:
        users[c.config.image_id] = users.get(c.config.image_id, 0) + 1
    for image in images:
        image["Containers"] = users.get(image["Id"], 0)
        image["SharedSize"] = 0
    rows = []
    for c in containers:
        row = listing.summary(c)
        row["SizeRw"] = tree_size(c.directory / "upper")
        row["SizeRootFs"] = row["SizeRw"]
        rows.append(row)
    layers = sum(image["Size"] for image in images)
    return json_response(
        {
            "LayersSize": layers,
            "Images": images,
            "Containers": rows,
            "Volumes": volume_api.disk_usage(engine),
            "BuildCache": build_api.cache_rows(engine),
        }
    )


def _warnings(engine) -> list[str]:
    if engine.network_problem:
        return [f"WARNING: {engine.network_problem}"]
    if engine.config.default_bridge:
        return []
    return [
        'WARNING: there is no default bridge network ("bridge": "none"; the VM\'s engine has '
        '"bridge": "docker0"): containers run with --network none unless given a network'
    ]
