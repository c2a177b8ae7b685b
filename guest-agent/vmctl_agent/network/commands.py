"""The commands that make the kernel's state match the records: iproute2 batches for
bridges (each container's veth pair is made over rtnetlink: netlink.py), and one
iptables-restore input for all the rules. Pure functions, so
what runs is tested apart from running it (host.py runs them).

The rules live in chains of our own, regenerated whole at every change (iptables-restore
--noflush empties a chain it declares), with one jump into each from the built-in chains:

    filter VMCTL-FORWARD      isolation between networks, --internal, and forwarding
    nat    VMCTL-POSTROUTING  MASQUERADE for traffic leaving a network (not --internal)
    nat    VMCTL-PREROUTING   published ports reached at the VM's own addresses from outside
                              it: DNAT to the container (Docker's DOCKER chain). The VM
                              itself and its containers reach the ports through the engine's
                              listeners (proxy.py); the user's machine, through the guest's
                              sshd to the container's address (vmctl's portforward.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

FORWARD_CHAIN = "VMCTL-FORWARD"
NAT_CHAIN = "VMCTL-POSTROUTING"
DNAT_CHAIN = "VMCTL-PREROUTING"
JUMPS = (
    ("filter", "FORWARD", FORWARD_CHAIN),
    ("nat", "POSTROUTING", NAT_CHAIN),
    ("nat", "PREROUTING", DNAT_CHAIN),
)


@dataclass(frozen=True)
class BridgeState:
    """What the firewall needs to know of one bridge network."""

    bridge: str
    subnets: tuple[str, ...]
    internal: bool = False


@dataclass(frozen=True)
class Forward:
    """A published port: what comes in for `port` at the VM's own address goes to the
    container's `address`:`target`."""

    proto: str
    port: int
    address: str
    target: int


@dataclass(frozen=True)
class Plug:
    """One container's end of a network: a veth pair, `eth0` (or ethN) in its namespace."""

    netns: str
    veth: str
    bridge: str
    interface: str
    address: str  # with its prefix: 172.17.0.2/16
    mac: str
    gateway: str = ""  # empty: no default route (--internal, or not the first network)
    link_local: tuple[str, ...] = ()  # more addresses, with their prefix


def bridge_up(bridge: str, addresses: Sequence[str], exists: bool) -> str:
    """An `ip -batch` making (or, after a restart, re-checking) a bridge with its gateway
    addresses; `replace` leaves an address that is already there as it is.

    The kernel's route to each subnet is replaced by the same route with `quickack`: the VM's
    end of a connection to a container (sshd carrying a published port, the engine's proxy)
    then acknowledges at once. A delayed ACK there held a server's second write (headers,
    then body, with Nagle on) for 40 ms, a small request's whole time."""
    lines = [] if exists else [f"link add name {bridge} type bridge"]
    lines += [f"addr replace {a} dev {bridge}" for a in addresses]
    lines.append(f"link set {bridge} up")
    for a in map(ipaddress.ip_interface, addresses):
        lines.append(
            f"route replace {a.network} dev {bridge} proto kernel scope link src {a.ip} quickack 1"
        )
    return "\n".join(lines) + "\n"


def bridge_down(bridge: str) -> str:
    return f"link del {bridge}\n"


def unplug(veth: str) -> str:
    return f"link del {veth}\n"


def firewall(bridges: Sequence[BridgeState], forwards: Sequence[Forward] = ()) -> str:
    """The iptables-restore input for every bridge network and published port at once."""
    filter_rules = [*_isolation(bridges), *_published(forwards),
                    *(r for b in bridges for r in _forward(b))]  # fmt: skip
    nat_rules = [f"-s {s} ! -o {b.bridge} -j MASQUERADE" for b in bridges if not b.internal
                 for s in b.subnets]  # fmt: skip
    # Only what comes from outside the VM: a container's own bridge returns (its connection
    # to the VM's port goes to the engine's listener, as with Docker's userland proxy).
    dnat_rules = [f"-i {b.bridge} -j RETURN" for b in bridges] if forwards else []
    dnat_rules += [
        f"-p {f.proto} -m addrtype --dst-type LOCAL -m {f.proto} --dport {f.port} "
        f"-j DNAT --to-destination {f.address}:{f.target}"
        for f in forwards
    ]
    return _table("filter", {FORWARD_CHAIN: filter_rules}) + _table(
        "nat", {NAT_CHAIN: nat_rules, DNAT_CHAIN: dnat_rules}
    )


def _table(table: str, chains: dict[str, list[str]]) -> str:
    heads = "".join(f":{chain} - [0:0]\n" for chain in chains)
    body = "".join(f"-A {chain} {rule}\n" for chain, rules in chains.items() for rule in rules)
    return f"*{table}\n{heads}{body}COMMIT\n"


def _published(forwards: Sequence[Forward]) -> list[str]:
    """Both ways of a connection the DNAT sent to a container, let through before
    --internal's drops: a published port works whatever network its container is on, as it
    does through the engine's listener."""
    return ["-m conntrack --ctstate DNAT -j ACCEPT"] if forwards else []


def _isolation(bridges: Sequence[BridgeState]) -> list[str]:
    """Containers on different networks cannot reach each other (Docker's ISOLATION chains)."""
    return [f"-i {a.bridge} -o {b.bridge} -j DROP" for a in bridges for b in bridges if a is not b]


def _forward(b: BridgeState) -> list[str]:
    if b.internal:  # no way in or out but within the bridge
        return [f"-i {b.bridge} ! -o {b.bridge} -j DROP", f"! -i {b.bridge} -o {b.bridge} -j DROP"]
    return [
        f"-o {b.bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-i {b.bridge} -j ACCEPT",
    ]


def jump_check(table: str, builtin: str, chain: str) -> list[str]:
    return ["iptables", "-w", "-t", table, "-C", builtin, "-j", chain]


def jump_insert(table: str, builtin: str, chain: str) -> list[str]:
    return ["iptables", "-w", "-t", table, "-I", builtin, "-j", chain]
