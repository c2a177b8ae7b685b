"""Docker's inspect shapes: every field dockerd returns, with its zero value where the engine
sets nothing, so that clients reading `HostConfig.CpuShares` or `Config.Domainname` find what
they find on dockerd (a KeyError in a client is a wrong answer too).

The shapes are dockerd's (API 1.41+), field for field; `complete` lays the engine's own
values over them. Fields dockerd omits when empty (State.Health without a health check,
Config.StopTimeout, Config.Healthcheck) are omitted here too.
"""

from __future__ import annotations

import copy

from vmctl_agent.runtime.rootfs import MASKED, READ_ONLY

ZERO_TIME = "0001-01-01T00:00:00Z"

HOST_CONFIG = {
    "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "none", "PortBindings": {}, "RestartPolicy": {"Name": "no",
    "MaximumRetryCount": 0}, "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None,
    "ConsoleSize": [0, 0], "CapAdd": None, "CapDrop": None, "CgroupnsMode": "host", "Dns": [],
    "DnsOptions": [], "DnsSearch": [], "ExtraHosts": None, "GroupAdd": None,
    "IpcMode": "private", "Cgroup": "", "Links": None, "OomScoreAdj": 0, "PidMode": "",
    "Privileged": False, "PublishAllPorts": False, "ReadonlyRootfs": False, "SecurityOpt": None,
    "UTSMode": "", "UsernsMode": "", "ShmSize": 64 << 20, "Runtime": "vmctl", "Isolation": "",
    "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
    "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [],
    "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [], "CpuPeriod": 0, "CpuQuota": 0,
    "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "",
    "Devices": [], "DeviceCgroupRules": None, "DeviceRequests": None, "MemoryReservation": 0,
    "MemorySwap": 0, "MemorySwappiness": None, "OomKillDisable": False, "PidsLimit": None,
    "Ulimits": [], "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
    "MaskedPaths": list(MASKED), "ReadonlyPaths": list(READ_ONLY), "Init": None,
    "KernelMemory": 0, "KernelMemoryTCP": 0, "Tmpfs": None,
}  # fmt: skip

CONFIG = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None,
    "Cmd": None, "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None,
    "OnBuild": None, "Labels": {},
}  # fmt: skip

NETWORK_SETTINGS = {
    "Bridge": "", "SandboxID": "", "HairpinMode": False, "LinkLocalIPv6Address": "",
    "LinkLocalIPv6PrefixLen": 0, "Ports": {}, "SandboxKey": "", "SecondaryIPAddresses": None,
    "SecondaryIPv6Addresses": None, "EndpointID": "", "Gateway": "", "GlobalIPv6Address": "",
    "GlobalIPv6PrefixLen": 0, "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "",
    "MacAddress": "", "Networks": {},
}  # fmt: skip

CONTAINER = {
    "Id": "", "Created": ZERO_TIME, "Path": "", "Args": [], "State": {"Status": "created",
    "Running": False, "Paused": False, "Restarting": False, "OOMKilled": False, "Dead": False,
    "Pid": 0, "ExitCode": 0, "Error": "", "StartedAt": ZERO_TIME, "FinishedAt": ZERO_TIME},
    "Image": "", "ResolvConfPath": "", "HostnamePath": "", "HostsPath": "", "LogPath": "",
    "Name": "", "RestartCount": 0, "Driver": "overlay2", "Platform": "linux", "MountLabel": "",
    "ProcessLabel": "", "AppArmorProfile": "", "ExecIDs": None, "HostConfig": HOST_CONFIG,
    "GraphDriver": {"Data": None, "Name": "overlay2"}, "Mounts": [], "Config": CONFIG,
    "NetworkSettings": NETWORK_SETTINGS,
}  # fmt: skip

IMAGE = {
    "Id": "", "RepoTags": [], "RepoDigests": [], "Parent": "", "Comment": "",
    "Created": ZERO_TIME, "Container": "", "ContainerConfig": CONFIG, "DockerVersion": "",
    "Author": "", "Config": CONFIG, "Architecture": "", "Os": "", "Size": 0, "VirtualSize": 0,
    "GraphDriver": {"Data": None, "Name": "overlay2"}, "RootFS": {"Type": "layers"},
    "Metadata": {"LastTagTime": ZERO_TIME},
}  # fmt: skip

EXEC = {
    "ID": "", "Running": False, "ExitCode": None, "ProcessConfig": {"tty": False,
    "entrypoint": "", "arguments": [], "privileged": False}, "OpenStdin": False,
    "OpenStderr": False, "OpenStdout": False, "CanRemove": False, "ContainerID": "",
    "DetachKeys": "", "Pid": 0,
}  # fmt: skip


def complete(ours: dict, shape: dict) -> dict:
    """`shape` with `ours` laid over it: nested objects merged, everything else ours."""
    merged = copy.deepcopy(shape)
    for key, value in ours.items():
        zero = merged.get(key)
        both_objects = isinstance(zero, dict) and isinstance(value, dict) and zero
        merged[key] = complete(value, zero) if both_objects else value
    return merged
