"""Nothing silently dropped: a walk over every field of the Engine API's (v1.47) ContainerConfig,
HostConfig and NetworkingConfig endpoint settings, each sent alone (with what it needs) to
`vmctl-agent serve` as it runs here (no bridge: the host's network rule), asserting it is
honoured (checked from inside the container, or shown back as dockerd shows it where only the
kernel's cgroup files or a client would see it), refused with a 400 naming it, carried in
`Warnings` where dockerd only warns, or, for the endpoint fields that are dockerd's outputs,
answered with the engine's own values, as dockerd answers.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
from agentserver import ok, serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")
MIB = 1024 * 1024
V1 = Path("/sys/fs/cgroup/memory/cgroup.procs").exists()  # the host here; v2 in the VM

# The fields of the API reference (v1.47, ContainerCreate's body): the walk must cover each.
CONTAINER_CONFIG = [
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "MacAddress",
    "OnBuild",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Shell",
]
HOST_CONFIG = [
    "CpuShares",
    "Memory",
    "CgroupParent",
    "BlkioWeight",
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
    "CpuPeriod",
    "CpuQuota",
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "CpusetCpus",
    "CpusetMems",
    "Devices",
    "DeviceCgroupRules",
    "DeviceRequests",
    "KernelMemoryTCP",
    "MemoryReservation",
    "MemorySwap",
    "MemorySwappiness",
    "NanoCpus",
    "OomKillDisable",
    "Init",
    "PidsLimit",
    "Ulimits",
    "CpuCount",
    "CpuPercent",
    "IOMaximumIOps",
    "IOMaximumBandwidth",
    "Binds",
    "ContainerIDFile",
    "LogConfig",
    "NetworkMode",
    "PortBindings",
    "RestartPolicy",
    "AutoRemove",
    "VolumeDriver",
    "VolumesFrom",
    "Mounts",
    "ConsoleSize",
    "Annotations",
    "CapAdd",
    "CapDrop",
    "CgroupnsMode",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "GroupAdd",
    "IpcMode",
    "Cgroup",
    "Links",
    "OomScoreAdj",
    "PidMode",
    "Privileged",
    "PublishAllPorts",
    "ReadonlyRootfs",
    "SecurityOpt",
    "StorageOpt",
    "Tmpfs",
    "UTSMode",
    "UsernsMode",
    "ShmSize",
    "Sysctls",
    "Runtime",
    "Isolation",
    "MaskedPaths",
    "ReadonlyPaths",
]
ENDPOINT_SETTINGS = [
    "IPAMConfig",
    "Links",
    "MacAddress",
    "Aliases",
    "DriverOpts",
    "NetworkID",
    "EndpointID",
    "Gateway",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "DNSNames",
]


@dataclass(frozen=True)
class Check:
    """How one field is asserted: `kind` is inside, shown, refused, warned or output."""

    kind: str
    value: object
    cmd: tuple[str, ...] = ()  # inside: what the container runs; its output is `expected`
    expected: object = None  # inside: stdout, stripped; shown: the inspect value (None: value)
    also: dict = field(default_factory=dict)  # more of the body it needs ("Config.Tty": True)


def inside(value, script, expected, **also) -> Check:
    cmd = tuple(script) if isinstance(script, list) else ("sh", "-c", script)
    return Check("inside", value, cmd, expected, also)


def shown(value, expected=None, **also) -> Check:
    return Check("shown", value, expected=value if expected is None else expected, also=also)


def refused(value) -> Check:
    return Check("refused", value)


def warned(value, text: str) -> Check:
    return Check("warned", value, expected=text)


def status(field_name: str) -> str:
    return f"grep {field_name} /proc/self/status | cut -f2"


def _ns(kind: str) -> str:
    return os.readlink(f"/proc/self/ns/{kind}")


def _own_bounding_set() -> str:
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(line for line in lines if line.startswith("CapBnd:")).split()[1]


ON_PORTS = "Published ports are discarded"  # the agent here has no bridge network
WALK: dict[str, Check] = {
    "Config.Hostname": inside("walker", "hostname", "walker"),
    "Config.Domainname": refused("example.com"),
    "Config.User": inside("nobody", "id -u", "65534"),
    "Config.AttachStdin": shown(True),
    "Config.AttachStdout": shown(True),
    "Config.AttachStderr": shown(True),
    "Config.ExposedPorts": shown({"80/tcp": {}}),
    "Config.Tty": inside(True, "test -t 1 && echo tty", "tty"),
    "Config.OpenStdin": shown(True),
    "Config.StdinOnce": shown(True),
    "Config.Env": inside(["WALK=yes"], "echo $WALK", "yes"),
    "Config.Cmd": inside(["echo", "ran"], ["unused"], "ran"),
    "Config.Healthcheck": shown({"Test": ["CMD", "true"], "Interval": 10**9}),
    "Config.ArgsEscaped": shown(True),
    "Config.Image": inside("busybox", "echo ok", "ok"),
    "Config.Volumes": inside({"/walk": {}}, "grep -c ' /walk ' /proc/mounts", "1"),
    "Config.WorkingDir": inside("/tmp", "pwd", "/tmp"),
    "Config.Entrypoint": inside(["echo", "entry"], ["point"], "entry point"),
    "Config.NetworkDisabled": refused(True),
    "Config.MacAddress": refused("02:42:ac:11:00:02"),
    "Config.OnBuild": shown(["RUN true"]),
    "Config.Labels": shown({"walk": "yes"}),
    "Config.StopSignal": shown("SIGUSR1"),
    "Config.StopTimeout": shown(5),
    "Config.Shell": shown(["/bin/sh", "-c"]),
    "HostConfig.CpuShares": shown(512),  # the cgroup files: test_api_sessions, test_cgroups
    "HostConfig.Memory": shown(64 * MIB),
    "HostConfig.CgroupParent": refused("walk"),
    "HostConfig.BlkioWeight": refused(100),
    "HostConfig.BlkioWeightDevice": refused([{"Path": "/dev/null", "Weight": 100}]),
    "HostConfig.BlkioDeviceReadBps": refused([{"Path": "/dev/null", "Rate": 1}]),
    "HostConfig.BlkioDeviceWriteBps": refused([{"Path": "/dev/null", "Rate": 1}]),
    "HostConfig.BlkioDeviceReadIOps": refused([{"Path": "/dev/null", "Rate": 1}]),
    "HostConfig.BlkioDeviceWriteIOps": refused([{"Path": "/dev/null", "Rate": 1}]),
    "HostConfig.CpuPeriod": refused(100_000),
    "HostConfig.CpuQuota": refused(50_000),
    "HostConfig.CpuRealtimePeriod": refused(1000),
    "HostConfig.CpuRealtimeRuntime": refused(100),
    "HostConfig.CpusetCpus": inside("0", status("Cpus_allowed_list"), "0"),
    "HostConfig.CpusetMems": inside("0", status("Mems_allowed_list"), "0"),
    "HostConfig.Devices": inside(
        [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/walk", "CgroupPermissions": "rwm"}],
        "stat -c %t,%T /dev/walk",
        "1,3",
    ),
    "HostConfig.DeviceCgroupRules": refused(["c 7:128 rwm"]),
    "HostConfig.DeviceRequests": refused([{"Driver": "nvidia", "Count": -1}]),
    "HostConfig.KernelMemoryTCP": refused(MIB),
    "HostConfig.MemoryReservation": refused(32 * MIB),
    "HostConfig.MemorySwap": shown(96 * MIB, **{"HostConfig.Memory": 64 * MIB}),
    "HostConfig.MemorySwappiness": (shown(10) if V1 else warned(10, "Memory swappiness discarded")),
    "HostConfig.NanoCpus": shown(500_000_000),
    "HostConfig.OomKillDisable": warned(True, "OOM killer is disabled for the container"),
    "HostConfig.Init": inside(True, ["cat", "/proc/1/comm"], "docker-init"),
    "HostConfig.PidsLimit": shown(50),
    "HostConfig.Ulimits": inside([{"Name": "nofile", "Soft": 99, "Hard": 99}], "ulimit -n", "99"),
    "HostConfig.CpuCount": refused(1),
    "HostConfig.CpuPercent": refused(50),
    "HostConfig.IOMaximumIOps": refused(1),
    "HostConfig.IOMaximumBandwidth": refused(1),
    "HostConfig.Binds": inside(
        ["/etc/hostname:/walk:ro"], "cat /walk", Path("/etc/hostname").read_text().strip()
    ),
    "HostConfig.ContainerIDFile": shown("/tmp/walk.cid"),  # the CLI writes it
    "HostConfig.LogConfig": shown({"Type": "json-file", "Config": {"max-size": "1m"}}),
    "HostConfig.NetworkMode": inside("host", "readlink /proc/self/ns/net", _ns("net")),
    "HostConfig.PortBindings": warned({"80/tcp": [{"HostPort": "8080"}]}, ON_PORTS),
    "HostConfig.RestartPolicy": shown({"Name": "on-failure", "MaximumRetryCount": 1}),
    "HostConfig.AutoRemove": shown(True),
    "HostConfig.VolumeDriver": shown("walkdriver"),  # used for named volumes (volumes room)
    "HostConfig.VolumesFrom": inside(["donor"], "grep -c ' /shared ' /proc/mounts", "1"),
    "HostConfig.Mounts": inside(
        [{"Type": "tmpfs", "Target": "/walk"}],
        "grep ' /walk ' /proc/mounts | cut -d' ' -f3",
        "tmpfs",
    ),
    "HostConfig.ConsoleSize": inside([12, 34], "stty size", "12 34", **{"Config.Tty": True}),
    "HostConfig.Annotations": refused({"walk": "yes"}),
    "HostConfig.CapAdd": inside(["NET_ADMIN"], status("CapEff"), "00000000a80435fb"),
    "HostConfig.CapDrop": inside(["CHOWN"], status("CapEff"), "00000000a80425fa"),
    "HostConfig.CgroupnsMode": inside("private", "grep -vc ':/$' /proc/self/cgroup", "0"),
    "HostConfig.Dns": refused(["1.1.1.1"]),  # with --network none, as dockerd
    "HostConfig.DnsOptions": refused(["ndots:2"]),
    "HostConfig.DnsSearch": refused(["walk.example"]),
    "HostConfig.ExtraHosts": refused(["walk:10.1.2.3"]),
    "HostConfig.GroupAdd": inside(["10"], "id -G | tr ' ' '\\n' | grep -x 10", "10"),
    "HostConfig.IpcMode": inside("host", "readlink /proc/self/ns/ipc", _ns("ipc")),
    "HostConfig.Cgroup": refused("container:walk"),
    "HostConfig.Links": refused(["walk:db"]),
    "HostConfig.OomScoreAdj": refused(100),
    "HostConfig.PidMode": inside("host", "readlink /proc/self/ns/pid", _ns("pid")),
    "HostConfig.Privileged": inside(True, status("CapBnd"), _own_bounding_set()),
    "HostConfig.PublishAllPorts": warned(True, ON_PORTS),
    "HostConfig.ReadonlyRootfs": inside(True, "touch /made 2>/dev/null || echo ro", "ro"),
    "HostConfig.SecurityOpt": inside(["no-new-privileges"], status("NoNewPrivs"), "1"),
    "HostConfig.StorageOpt": refused({"size": "1G"}),
    "HostConfig.Tmpfs": inside(
        {"/walk": "size=1m"}, "grep ' /walk ' /proc/mounts | cut -d' ' -f3", "tmpfs"
    ),
    "HostConfig.UTSMode": inside("host", "hostname", socket.gethostname()),
    "HostConfig.UsernsMode": inside("host", "readlink /proc/self/ns/user", _ns("user")),
    "HostConfig.ShmSize": inside(8 * MIB, "df -k /dev/shm | tail -1 | awk '{print $2}'", "8192"),
    "HostConfig.Sysctls": inside(
        {"kernel.shmmax": "7654321"}, "cat /proc/sys/kernel/shmmax", "7654321"
    ),
    "HostConfig.Runtime": shown("runc"),
    "HostConfig.Isolation": shown("default"),
    "HostConfig.MaskedPaths": refused(["/proc/walk"]),
    "HostConfig.ReadonlyPaths": refused(["/proc/walk"]),
}
ENDPOINT = "NetworkingConfig.EndpointsConfig.none."
WALK |= {
    ENDPOINT + "IPAMConfig": refused({"IPv4Address": "10.9.0.5"}),
    ENDPOINT + "Links": refused(["walk:db"]),
    ENDPOINT + "MacAddress": refused("02:42:ac:11:00:02"),
    ENDPOINT + "Aliases": refused(["walk"]),
    ENDPOINT + "DriverOpts": refused({"walk": "yes"}),
    **{ENDPOINT + name: Check("output", "walk-output") for name in ENDPOINT_SETTINGS[5:9]},
    ENDPOINT + "IPPrefixLen": Check("output", 7),
    ENDPOINT + "IPv6Gateway": Check("output", "fd00::1"),
    ENDPOINT + "GlobalIPv6Address": Check("output", "fd00::7"),
    ENDPOINT + "GlobalIPv6PrefixLen": Check("output", 7),
    ENDPOINT + "DNSNames": Check("output", ["walk-output"]),
}


def test_the_walk_covers_every_field_of_the_reference():
    reference = {f"Config.{name}" for name in CONTAINER_CONFIG}
    reference |= {f"HostConfig.{name}" for name in HOST_CONFIG}
    reference |= {ENDPOINT + name for name in ENDPOINT_SETTINGS}
    assert set(WALK) == reference


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-fields"), registry) as server:
        assert server.docker("pull", "busybox").returncode == 0
        ok(server.docker("create", "--name", "donor", "-v", "/shared", "busybox"))
        yield server


@pytest.fixture
def api(agent):
    client = docker.APIClient(base_url=agent.url, version="1.47", timeout=120)
    yield client
    client.close()


def body_with(path: str, value, cmd: tuple[str, ...] = ("true",), **also) -> dict:
    body: dict = {"Image": "busybox", "Cmd": list(cmd)}
    for where, what in {path: value, **also}.items():
        keys = where.split(".")
        node = body if keys[0] == "Config" else body.setdefault(keys[0], {})
        for key in keys[1:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = what
    return body


def at(document: dict, path: str):
    keys = path.replace(".EndpointsConfig.", ".Networks.").split(".")
    keys = ["NetworkSettings", *keys[1:]] if keys[0] == "NetworkingConfig" else keys
    for key in keys:
        document = document[key]
    return document


@pytest.mark.parametrize("path", sorted(WALK))
def test_each_field_is_honoured_refused_or_warned(agent, api, path):
    check = WALK[path]
    body = body_with(path, check.value, check.cmd or ("true",), **check.also)
    if path == "Config.Image":
        body["Image"] = check.value
    if check.kind == "refused":
        with pytest.raises(docker.errors.APIError) as refusal:
            api.create_container_from_config(body, None)
        assert refusal.value.status_code == 400
        assert path.rsplit(".", 1)[-1] in refusal.value.explanation
        return
    created = api.create_container_from_config(body, None)
    try:
        _assert_honoured(api, check, path, created)
    finally:
        api.remove_container(created["Id"], force=True)


def _assert_honoured(api, check: Check, path: str, created: dict) -> None:
    if check.kind == "warned":
        assert any(check.expected in w for w in created["Warnings"] or ()), created
    elif check.kind == "shown":
        assert at(api.inspect_container(created["Id"]), path) == check.expected
    elif check.kind == "output":
        api.start(created["Id"])
        assert at(api.inspect_container(created["Id"]), path) != check.value
    else:
        api.start(created["Id"])
        api.wait(created["Id"], timeout=120)
        out = api.logs(created["Id"], stdout=True, stderr=False).decode()
        assert out.strip() == check.expected
