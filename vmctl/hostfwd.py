"""QEMU's own forwards for published ports: the VM's user-mode network (slirp) listens on the
user's machine and carries each connection and datagram to the VM's address, where the
engine's DNAT sends it on to the container (the agent's network/commands.py). Neither Python
nor SSH is on the way, on either side, for TCP and UDP alike.

They are added and removed over the VM's monitor (HMP `hostfwd_add` and `hostfwd_remove`,
through libvirt or QMP) and live as long as QEMU does: `info usernet` lists them, so the
host agent always asks QEMU what there is rather than remember it (a restarted host agent
takes up what the last one left; a restarted QEMU has none).
"""

from __future__ import annotations

import re
from collections.abc import Callable

Key = tuple[str, int, str]  # (proto, host port, host address), as portforward.py keys them
_ROW = re.compile(
    r"^\s*(TCP|UDP)\[HOST_FORWARD\]\s+\d+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s", re.MULTILINE
)


class ForwardError(Exception):
    """QEMU could not listen there: the host port is taken (or the address is not ours)."""


class HostForwards:
    """`hmp(command)` answers a human monitor command; `netdev` is the user network's id.
    `keep` are forwards that are not published ports (the SSH port): never listed."""

    def __init__(self, hmp: Callable[[str], str], netdev: str, keep: set[Key]) -> None:
        self.hmp = hmp
        self.netdev = netdev
        self.keep = keep

    def listed(self) -> dict[Key, int]:
        """Every forward QEMU has, with the VM's port it goes to."""
        found = {}
        for proto, address, port, _guest, guest_port in _ROW.findall(self.hmp("info usernet")):
            key = (proto.lower(), int(port), "0.0.0.0" if address == "*" else address)
            if key not in self.keep:
                found[key] = int(guest_port)
        return found

    def add(self, key: Key, vm_port: int) -> None:
        proto, port, address = key
        rule = f"{proto}:{address}:{port}-:{vm_port}"
        answer = self.hmp(f"hostfwd_add {self.netdev} {rule}").strip()
        if answer:  # silent when it worked
            raise ForwardError(answer)

    def remove(self, key: Key) -> None:
        """Gone when this returns (one already gone is fine)."""
        proto, port, address = key
        self.hmp(f"hostfwd_remove {self.netdev} {proto}:{address}:{port}")
