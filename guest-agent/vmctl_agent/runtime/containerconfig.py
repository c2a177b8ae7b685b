"""A container's configuration, decided once at create: what to run, as whom, where, limited
how. Built by a pure function from the image and `docker run`'s options; the runtime stores it
as config.json and turns it into a shim.Launch at each start.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from vmctl_agent.runtime import (
    capabilities,
    cgroupfs,
    devices,
    healthcheck,
    isolation,
    logconfig,
    logs,
    rootfs,
    shim,
    spec,
    ulimits,
)
from vmctl_agent.runtime.healthcheck import Healthcheck
from vmctl_agent.runtime.mounts import Mount
from vmctl_agent.runtime.netns import Joined
from vmctl_agent.runtime.restarts import RestartPolicy
from vmctl_agent.store.content import short_lower
from vmctl_agent.store.images import Image

BUILT_IN_NETWORKS = ("none", "host")  # the runtime alone makes these; others need the network room
HOSTS = (
    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
)
FALLBACK_DNS = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
INIT_LAYER = ".init"  # in the containers' directory: rootfs.make_init_layer's
MOUNT_POINT = ".rootfs"  # in the containers' directory: where each root is mounted


@dataclass(frozen=True)
class ContainerConfig:
    id: str
    name: str
    created: str
    image: str
    image_id: str
    options: dict
    process: dict
    hostname: str
    layers: tuple[str, ...]  # lower dirs, top first
    limits: dict = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM
    config_env: tuple[str, ...] | None = None  # Config.Env (None: made before it was kept)
    healthcheck: dict | None = None  # the image's and run's, merged (Docker's shape)
    shell: list[str] | None = None  # Config.Shell, the run's or the image's: CMD-SHELL's

    def to_json(self) -> dict:
        """Shallow: the fields already hold plain JSON values (asdict would deep-copy them)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> ContainerConfig:
        return cls(**{**data, "layers": tuple(data["layers"])})

    @functools.cached_property
    def create_options(self) -> spec.CreateOptions:
        raw = dict(self.options)
        for key in ("cmd", "entrypoint"):
            if raw.get(key) is not None:
                raw[key] = tuple(raw[key])
        for key in spec.TUPLE_OPTIONS:
            raw[key] = tuple(raw.get(key) or ())
        raw["mounts"] = tuple(Mount(**m) for m in raw.get("mounts") or ())
        return spec.CreateOptions(**raw)

    @functools.cached_property
    def process_spec(self) -> spec.ProcessSpec:
        raw = dict(self.process)
        raw["user"] = spec.User(**{**raw["user"], "groups": tuple(raw["user"]["groups"])})
        for key in ("args", "env", "capabilities"):
            raw[key] = tuple(raw[key])
        return spec.ProcessSpec(**raw)

    @property
    def cgroup_limits(self) -> cgroupfs.Limits:
        return cgroupfs.Limits(**self.limits)

    @functools.cached_property
    def health_check(self) -> Healthcheck | None:
        return healthcheck.merge(self.healthcheck, None, shell=self.shell)

    @property
    def stop_timeout(self) -> float:
        timeout = self.create_options.stop_timeout
        return 10 if timeout is None else timeout

    @property
    def restart_policy(self) -> RestartPolicy:
        options = self.create_options
        return RestartPolicy(options.restart_policy, options.restart_retries)

    @property
    def network(self) -> str:
        return self.options.get("network") or "none"

    def launch(
        self,
        directory: Path,
        cgroup_version: int,
        joined: Joined | None = None,
        ipc_donor: tuple[int, str] = (0, ""),
    ) -> shim.Launch:
        """What the shim needs to start this container from `directory`; `joined` is the
        network namespace the network room made for it (none for `none` and `host`),
        `ipc_donor` the pid and /dev/shm `--ipc container:` joins (isolation.ipc_donor)."""
        shareable = self.create_options.ipc_mode == "shareable"
        options = self.create_options
        return shim.Launch(
            name=self.id,
            process=self._first_process(),
            plan=self._plan(directory, cgroup_version, joined, ipc_donor),
            hostname=self.hostname,
            namespaces=self._namespaces(cgroup_version, joined),
            netns=joined.netns if joined else "",
            ipc_ns=f"/proc/{ipc_donor[0]}/ns/ipc" if ipc_donor[0] else "",
            shared_shm=isolation.shared_shm(str(directory)) if shareable else "",
            state_dir=str(directory),
            open_stdin=options.open_stdin,
            stdin_once=options.stdin_once,
            auto_remove=options.auto_remove,
            ulimits=options.ulimits,
            log_rotation=logconfig.rotation(options.log_driver, options.log_options),
            console_size=options.console_size,
        )

    def _first_process(self) -> spec.ProcessSpec:
        """The command; with `--init`, run by docker-init (which reaps and forwards signals)."""
        process = self.process_spec
        if not self.create_options.init:
            return process
        return replace(process, args=(rootfs.INIT_PATH, "--", *process.args))

    def _plan(
        self, directory: Path, cgroup_version: int, joined: Joined | None, ipc_donor: tuple
    ) -> rootfs.RootfsPlan:
        """Shared by all containers (beside their directories): the init layer and the mount
        point, which each container's own mount namespace mounts its overlay on."""
        options = self.create_options
        layers_root = str(Path(self.layers[0]).parent.parent) if self.layers else "/"
        lower = tuple(map(short_lower, self.layers))
        if rootfs.init_layer_fits(self.layers):
            lower = (os.path.relpath(directory.parent / INIT_LAYER, layers_root), *lower)
        return rootfs.RootfsPlan(
            layers_root=layers_root,
            lower=lower,
            upper=str(directory / "upper"),
            work=str(directory / "work"),
            merged=str(directory.parent / MOUNT_POINT),
            etc_files=self._etc_files(joined),
            host_network=self.network == "host",
            cgroup_v2=cgroup_version == 2,
            mounts=options.mounts,
            read_only=options.read_only,
            shm_size=options.shm_size,
            shm=isolation.shm_source(options, str(directory), ipc_donor[1]),
            sysctls=tuple(options.sysctls.items()),
            init=isolation.init_binary() if options.init else "",
            privileged=options.privileged,
            devices=tuple((host, inside) for host, inside, _ in options.devices),
        )

    def _namespaces(self, cgroup_version: int, joined: Joined | None) -> int:
        own_network = self.network != "host" and joined is None
        return isolation.namespaces(self.create_options, cgroup_version, own_network)

    def _etc_files(self, joined: Joined | None) -> tuple[tuple[str, bytes], ...]:
        """/etc/hostname, /etc/hosts and /etc/resolv.conf, made fresh at each start."""
        host = self.network == "host"
        hosts = _host_file("/etc/hosts") if host else HOSTS
        resolv = resolv_conf(host)
        if joined is not None:
            hosts, resolv = joined.hosts, joined.resolv_conf
        files = {"hostname": f"{self.hostname}\n", "hosts": hosts, "resolv.conf": resolv}
        return tuple((f"/etc/{name}", text.encode()) for name, text in files.items())

    def inspect(self) -> dict:
        """The config half of `docker inspect`."""
        options, process = self.create_options, self.process_spec
        asked = options.mount_request
        return {
            "Id": self.id,
            "Created": self.created,
            "Path": process.args[0],
            "Args": list(process.args[1:]),
            "Image": self.image_id,
            "Name": "/" + self.name,
            "Driver": "overlay2",
            "Platform": "linux",
            "Config": {
                "Hostname": self.hostname,
                "User": options.user,
                "Env": list(process.env if self.config_env is None else self.config_env),
                "Cmd": list(options.cmd) if options.cmd is not None else None,
                "Entrypoint": list(options.entrypoint) if options.entrypoint else None,
                "Image": self.image,
                "WorkingDir": options.working_dir,
                "Labels": dict(options.labels),
                "Tty": options.tty,
                "OpenStdin": options.open_stdin,
                "StdinOnce": options.stdin_once,
                "ExposedPorts": {p: {} for p in options.exposed_ports} or None,
                "Volumes": asked.get("Volumes"),
                **({"Healthcheck": self.healthcheck} if self.healthcheck else {}),
                **self._stop_settings(),
                **options.recorded.get("Config", {}),
                **({"Shell": self.shell} if self.shell else {}),
            },
            "HostConfig": {
                "Memory": options.memory,
                "NanoCpus": options.nano_cpus,
                "CpuShares": self.limits.get("cpu_shares") or 0,
                **self._memory_and_cpuset(),
                "PidsLimit": options.pids_limit,
                "AutoRemove": options.auto_remove,
                "NetworkMode": self.network,
                "CapAdd": list(options.cap_add) or None,
                "CapDrop": list(options.cap_drop) or None,
                "SecurityOpt": ["no-new-privileges"] if options.no_new_privileges else None,
                "LogConfig": {"Type": options.log_driver, "Config": dict(options.log_options)},
                "RestartPolicy": self.restart_policy.inspect(),
                "Privileged": options.privileged,
                "Devices": devices.inspect(options.devices),
                "ReadonlyRootfs": options.read_only,
                "ShmSize": options.shm_size or rootfs.SHM_SIZE,
                "Ulimits": ulimits.inspect(options.ulimits) or None,
                **isolation.inspect(options),
                "Binds": asked.get("Binds"),
                "Mounts": asked.get("Mounts"),
                "Tmpfs": asked.get("Tmpfs"),
                "VolumesFrom": asked.get("VolumesFrom"),
                "PortBindings": options.port_bindings,
                "PublishAllPorts": options.publish_all,
                "Dns": list(options.dns),
                "DnsOptions": list(options.dns_options),
                "DnsSearch": list(options.dns_search),
                "ExtraHosts": list(options.extra_hosts) or None,
                "Links": None,
                "Isolation": options.isolation,
                "GroupAdd": list(options.group_add) or None,
                **options.recorded.get("HostConfig", {}),
            },
            "Mounts": [m.inspect() for m in options.mounts if m.listed],
        }

    def _memory_and_cpuset(self) -> dict:
        """As dockerd shows them: MemorySwap twice Memory unless asked otherwise."""
        limits = self.cgroup_limits
        return {
            "MemorySwap": limits.swap_total if limits.memory else limits.memory_swap or 0,
            "MemorySwappiness": limits.swappiness,
            "OomKillDisable": limits.oom_kill_disable,
            "CpusetCpus": limits.cpuset_cpus,
            "CpusetMems": limits.cpuset_mems,
        }

    def _stop_settings(self) -> dict:
        """Config.StopSignal and StopTimeout, present only when set (as dockerd has them)."""
        options, settings = self.create_options, {}
        if options.stop_signal or self.stop_signal != signal.SIGTERM:
            settings["StopSignal"] = options.stop_signal or signal.Signals(self.stop_signal).name
        if options.stop_timeout is not None:
            settings["StopTimeout"] = options.stop_timeout
        return settings


def build_config(
    container_id: str,
    name: str,
    options: spec.CreateOptions,
    image: Image,
    layers: list[str],
    groups,
) -> ContainerConfig:
    """Merge the image's config with the options, checking everything a start would trip on."""
    image_config = image.config.get("config") or {}
    if not layers:
        raise spec.InvalidSpec(f"image {options.image} has no layers: nothing to run")
    limits = cgroupfs.Limits(
        memory=options.memory or None,
        cpus=options.nano_cpus / 1e9 if options.nano_cpus else None,
        pids=options.pids_limit,
        cpu_shares=options.cpu_shares or None,
        memory_swap=options.memory_swap or None,
        swappiness=options.memory_swappiness,
        oom_kill_disable=options.oom_kill_disable,
        cpuset_cpus=options.cpuset_cpus,
        cpuset_mems=options.cpuset_mems,
    )
    limits.check(cgroupfs.host_cpus())
    _check_restart_policy(options)
    isolation.check(options)
    logconfig.rotation(options.log_driver, options.log_options)
    healthcheck.check_options(options.healthcheck)
    checks = _merged_healthcheck(options.healthcheck, image_config.get("Healthcheck"))
    hostname = options.hostname or _hostname(container_id, options)
    user = spec.resolve_user(
        options.user or image_config.get("User") or "", layers, options.group_add
    )
    process = spec.ProcessSpec(
        args=spec.command(image_config, options),
        env=spec.environment(image_config.get("Env") or (), options.env, hostname, user.home),
        cwd=spec.working_dir(image_config, options),
        user=user,
        tty=options.tty,
        capabilities=_capabilities(options),
        no_new_privileges=options.no_new_privileges,
    )
    return ContainerConfig(
        id=container_id,
        name=name,
        created=logs.now(),
        image=options.image,
        image_id=image.id,
        options=asdict(options),
        process=asdict(process),
        hostname=hostname,
        layers=tuple(layers),
        limits=asdict(limits),
        stop_signal=_stop_signal(options.stop_signal or image_config.get("StopSignal")),
        config_env=spec.config_env(image_config.get("Env") or (), options.env),
        healthcheck=checks,
        shell=options.recorded.get("Config", {}).get("Shell") or image_config.get("Shell"),
    )


def _merged_healthcheck(asked: dict | None, image: dict | None) -> dict | None:
    """Docker's merge, field by field: what `docker run` gave, else the image's HEALTHCHECK."""
    if healthcheck.merge(asked, image) is None:
        return None
    asked, image = asked or {}, image or {}
    keys = ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")
    return {k: asked.get(k) or image.get(k) for k in keys if asked.get(k) or image.get(k)}


def _hostname(container_id: str, options: spec.CreateOptions) -> str:
    """The short id, or with `--uts host` the host's own name (the container shares it)."""
    return socket.gethostname() if options.uts_mode == "host" else container_id[:12]


def _check_restart_policy(options: spec.CreateOptions) -> None:
    policy = RestartPolicy(options.restart_policy, options.restart_retries)
    policy.check()
    if options.auto_remove and policy.name != "no":
        raise spec.InvalidSpec("can't create 'AutoRemove' container with restart policy")


def _capabilities(options: spec.CreateOptions) -> tuple[str, ...]:
    """Docker's default set with --cap-add and --cap-drop; privileged, every one the kernel
    has (dockerd then ignores both)."""
    if options.privileged:
        return capabilities.available()
    try:
        return capabilities.resolve(options.cap_add, options.cap_drop)
    except Exception as e:
        raise spec.InvalidSpec(str(e)) from e


def _stop_signal(name: str | None) -> int:
    if not name:
        return signal.SIGTERM
    if name.isdigit():
        return int(name)
    try:
        return signal.Signals["SIG" + name.upper().removeprefix("SIG")]
    except KeyError:
        raise spec.InvalidSpec(f"Invalid signal: {name}") from None


def _host_file(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return HOSTS


def resolv_conf(host_network: bool) -> str:
    """The host's resolv.conf; without the host's network, loopback servers are unreachable,
    so they are dropped (and public ones used if nothing is left), as Docker does."""
    text = _host_file("/etc/resolv.conf") if Path("/etc/resolv.conf").exists() else ""
    if host_network:
        return text
    lines = [ln for ln in text.splitlines() if not _loopback_nameserver(ln)]
    if not any(ln.startswith("nameserver") for ln in lines):
        lines.append(FALLBACK_DNS.rstrip("\n"))
    return "\n".join(lines) + "\n"


def _loopback_nameserver(line: str) -> bool:
    parts = line.split()
    return (
        len(parts) >= 2
        and parts[0] == "nameserver"
        and (parts[1].startswith("127.") or parts[1] == "::1")
    )
