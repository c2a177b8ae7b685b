"""`--sysctl`: kernel parameters of the container's own namespaces, checked as dockerd's
runtime checks them (only namespaced ones; `net.*` only with a network namespace of its own,
the IPC ones only with a private IPC namespace, `kernel.hostname`/`domainname` only with a
private UTS one) and written under the container's /proc/sys before it is made read-only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from vmctl_agent.runtime.spec import InvalidSpec

IPC = (
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced",
)  # fmt: skip
UTS = ("kernel.domainname", "kernel.hostname")


def check(sysctls: Mapping[str, str], *, host_network: bool, host_ipc: bool, host_uts: bool):
    """Raise what runc says of a sysctl that would change the host's (or is unknown)."""
    for name, value in sysctls.items():
        if not isinstance(name, str) or not isinstance(value, str) or "/" in name:
            raise InvalidSpec(f"invalid sysctl: {name!r}={value!r}")
        if name in IPC or name.startswith("fs.mqueue."):
            _refuse_if(host_ipc, name, "the host's IPC namespace")
        elif name.startswith("net."):
            _refuse_if(host_network, name, "the host's network namespace")
        elif name in UTS:
            _refuse_if(host_uts, name, "the host's UTS namespace")
        else:
            raise InvalidSpec(f"sysctl {name!r} is not in a separate kernel namespace")


def _refuse_if(shared: bool, name: str, where: str) -> None:
    if shared:
        raise InvalidSpec(f"sysctl {name!r} is not allowed in {where}")


def path(name: str) -> str:
    """/proc/sys/net/ipv4/ip_forward for net.ipv4.ip_forward."""
    return "/proc/sys/" + name.replace(".", "/")


def apply(sysctls: Iterable[tuple[str, str]]) -> None:
    """Inside the container, its /proc mounted: a sysctl the kernel lacks fails the start."""
    for name, value in sysctls:
        fd = os.open(path(name), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
