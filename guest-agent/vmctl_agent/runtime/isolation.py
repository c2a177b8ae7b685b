"""How a container is set apart from the host: its namespaces (`--pid`, `--uts`, `--ipc`,
`--cgroupns`, the network), `--init` and `--sysctl`, checked as dockerd checks them and turned
into the clone flags the shim unshares. Pure: nothing here touches the system but a lookup.
"""

from __future__ import annotations

import os

from vmctl_agent import syscalls as sc
from vmctl_agent.runtime import sysctls
from vmctl_agent.runtime.spec import CreateOptions, InvalidSpec

# The engine's docker-init: a static tini (Debian's `tini` package), bound into the container.
INIT_BINARIES = ("/usr/bin/tini-static", "/usr/libexec/docker/docker-init-static")
MODES = {
    "PID": ("", "host"),
    "UTS": ("", "host"),
    "IPC": ("", "private", "shareable", "none", "host"),
    "cgroup namespace": ("", "private", "host"),
}


def check(options: CreateOptions) -> None:
    """Refuse, in dockerd's words, what cannot be honoured (before anything is made)."""
    asked = {"PID": options.pid_mode, "UTS": options.uts_mode, "IPC": options.ipc_mode}
    asked["cgroup namespace"] = options.cgroupns_mode
    for what, mode in asked.items():
        donor = what == "IPC" and mode.startswith("container:") and mode != "container:"
        if mode not in MODES[what] and not donor:
            raise InvalidSpec(f"invalid {what} mode: {mode}")
    if options.uts_mode == "host" and options.hostname:
        raise InvalidSpec("Conflicting options: hostname and the UTS mode")
    sysctls.check(
        options.sysctls,
        host_network=options.network == "host",
        host_ipc=options.ipc_mode == "host",
        host_uts=options.uts_mode == "host",
    )
    if options.init:
        init_binary()


def init_binary(candidates: tuple[str, ...] = INIT_BINARIES) -> str:
    """The static tini `--init` binds in as /sbin/docker-init; a clear refusal without it."""
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise InvalidSpec(
        "--init needs docker-init, and this engine has none: install Debian's tini package "
        f"(it looks for {' or '.join(candidates)})"
    )


def namespaces(options: CreateOptions, cgroup_version: int, own_network: bool) -> int:
    """The clone flags of the namespaces the container gets of its own."""
    flags = sc.CLONE_NEWNS
    flags |= 0 if options.pid_mode == "host" else sc.CLONE_NEWPID
    flags |= 0 if options.uts_mode == "host" else sc.CLONE_NEWUTS
    flags |= 0 if options.ipc_mode == "host" or ipc_donor_name(options) else sc.CLONE_NEWIPC
    flags |= sc.CLONE_NEWNET if own_network else 0
    if cgroupns_mode(options, cgroup_version) == "private":
        flags |= sc.CLONE_NEWCGROUP
    return flags


def ipc_donor_name(options: CreateOptions) -> str:
    """The container whose IPC namespace and /dev/shm `--ipc container:NAME` joins, or ""."""
    return options.ipc_mode.removeprefix("container:") if ":" in options.ipc_mode else ""


def ipc_donor(options: CreateOptions, find) -> tuple[int, str]:
    """The running, shareable donor's first process and its shared /dev/shm on the host
    ((0, "") when none is asked), as dockerd requires it; `find` looks a container up."""
    name = ipc_donor_name(options)
    if not name:
        return 0, ""
    donor = find(name)
    if not donor.state.running:
        raise InvalidSpec(f"cannot join IPC of a non running container: {donor.id}")
    if donor.config.create_options.ipc_mode != "shareable":
        raise InvalidSpec("non-shareable IPC (hint: use IpcMode:shareable for the donor container)")
    return donor.state.pid, shared_shm(str(donor.directory))


def shared_shm(directory: str) -> str:
    """Where a shareable container's /dev/shm is mounted on the host, beside its records:
    a mount in another container's namespace cannot be bound, one on the host can."""
    return f"{directory}/shm"


def shm_source(options: CreateOptions, directory: str, donor_shm: str) -> str:
    """Where /dev/shm comes from, relative to the host's root: "" a tmpfs of its own,
    "none" no /dev/shm, else the host's, this shareable container's or its donor's."""
    if options.ipc_mode == "host":
        return "dev/shm"
    if options.ipc_mode == "shareable":
        return shared_shm(directory).lstrip("/")
    if donor_shm:
        return donor_shm.lstrip("/")
    return "none" if options.ipc_mode == "none" else ""


def cgroupns_mode(options: CreateOptions, cgroup_version: int) -> str:
    """As asked; else dockerd's default: private on cgroup v2, the host's on v1."""
    return options.cgroupns_mode or ("private" if cgroup_version == 2 else "host")


def inspect(options: CreateOptions) -> dict:
    """The HostConfig fields of these options, as dockerd shows them."""
    return {
        "PidMode": options.pid_mode,
        "UTSMode": options.uts_mode,
        "IpcMode": options.ipc_mode or "private",
        "Init": options.init or None,
        "Sysctls": dict(options.sysctls) or None,
        "CgroupnsMode": options.cgroupns_mode,
        "Runtime": options.runtime or "runc",
    }
