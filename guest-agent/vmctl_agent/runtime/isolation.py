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
    "IPC": ("", "private", "shareable", "host"),
    "cgroup namespace": ("", "private", "host"),
}


def check(options: CreateOptions) -> None:
    """Refuse, in dockerd's words, what cannot be honoured (before anything is made)."""
    asked = {"PID": options.pid_mode, "UTS": options.uts_mode, "IPC": options.ipc_mode}
    asked["cgroup namespace"] = options.cgroupns_mode
    for what, mode in asked.items():
        if mode not in MODES[what]:
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


def init_binary() -> str:
    """The static tini `--init` binds in as /sbin/docker-init; a clear refusal without it."""
    for path in INIT_BINARIES:
        if os.access(path, os.X_OK):
            return path
    raise InvalidSpec(
        "--init needs docker-init, and this engine has none: install Debian's tini package "
        f"(it looks for {' or '.join(INIT_BINARIES)})"
    )


def namespaces(options: CreateOptions, cgroup_version: int, own_network: bool) -> int:
    """The clone flags of the namespaces the container gets of its own."""
    flags = sc.CLONE_NEWNS
    flags |= 0 if options.pid_mode == "host" else sc.CLONE_NEWPID
    flags |= 0 if options.uts_mode == "host" else sc.CLONE_NEWUTS
    flags |= 0 if options.ipc_mode == "host" else sc.CLONE_NEWIPC
    flags |= sc.CLONE_NEWNET if own_network else 0
    if cgroupns_mode(options, cgroup_version) == "private":
        flags |= sc.CLONE_NEWCGROUP
    return flags


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
