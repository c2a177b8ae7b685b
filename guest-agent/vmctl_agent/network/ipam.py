"""Addresses for networks and containers, as Docker's default IPAM hands them out: subnets
from the default address pools (172.17.0.0/16 for the default bridge, then 172.18-31.0.0/16,
then 192.168.0.0/16 in /20s), the gateway at the first address, containers after it.
Pure functions over what is taken; the records say what is taken.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from vmctl_agent.errors import AgentError

Net = ipaddress.IPv4Network
Addr = ipaddress.IPv4Address

DEFAULT_BRIDGE_SUBNET = Net("172.17.0.0/16")
_POOLS = (
    *(Net(f"172.{n}.0.0/16") for n in range(17, 32)),
    *Net("192.168.0.0/16").subnets(new_prefix=20),
)


class InvalidNetworkConfig(AgentError):
    """400: a subnet, range or address that cannot be used."""


class PoolOverlap(AgentError):
    """403, as dockerd: the subnet overlaps one in use."""


class PoolExhausted(AgentError):
    """403: no default pool left, or no address left in a network."""


@dataclass(frozen=True)
class Subnet:
    """One IPAM config of a network: the subnet, its gateway, the range containers get, and
    auxiliary addresses (name, address) that no container gets (the user's hosts on it)."""

    subnet: Net
    gateway: Addr
    ip_range: Net | None = None
    aux: tuple[tuple[str, str], ...] = ()

    def reserved(self) -> set[Addr]:
        return {Addr(a) for _, a in self.aux}

    def to_json(self) -> dict:
        out = {"Subnet": str(self.subnet), "Gateway": str(self.gateway)}
        if self.ip_range is not None:
            out["IPRange"] = str(self.ip_range)
        if self.aux:
            out["AuxiliaryAddresses"] = dict(self.aux)
        return out

    @classmethod
    def from_json(cls, data: dict) -> Subnet:
        ip_range = data.get("IPRange")
        aux = tuple((data.get("AuxiliaryAddresses") or {}).items())
        return cls(Net(data["Subnet"]), Addr(data["Gateway"]), Net(ip_range) if ip_range else None,
                   aux)  # fmt: skip


def requested(config: dict, taken: Iterable[Net]) -> Subnet:
    """A subnet from an API IPAM config ({"Subnet", "Gateway", "IPRange"}), checked."""
    subnet = _network("subnet", config.get("Subnet") or "")
    ip_range = _network("ip-range", config["IPRange"]) if config.get("IPRange") else None
    if ip_range is not None and not ip_range.subnet_of(subnet):
        raise InvalidNetworkConfig(
            f"invalid network config:\ninvalid ip-range {ip_range}: "
            f"it should be within subnet {subnet}"
        )
    gateway = _gateway(config.get("Gateway") or "", subnet)
    aux = _auxiliary(config.get("AuxiliaryAddresses") or {}, subnet)
    _refuse_overlap(subnet, taken)
    return Subnet(subnet, gateway, ip_range, aux)


def _auxiliary(addresses: dict, subnet: Net) -> tuple[tuple[str, str], ...]:
    """Each must be an address of the subnet, as libnetwork's IPAM checks them."""
    for name, text in addresses.items():
        try:
            inside = Addr(text) in subnet
        except ValueError:
            raise InvalidNetworkConfig(
                f"invalid network config:\ninvalid auxiliary address {name}: {text}"
            ) from None
        if not inside:
            raise InvalidNetworkConfig(
                f"auxiliary address: ({name}:{text}) must belong to the master pool: {subnet}"
            )
    return tuple(sorted(addresses.items()))


def _network(what: str, text: str) -> Net:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidNetworkConfig(
            f"invalid network config:\ninvalid {what} {text}: invalid CIDR address: {text}"
        ) from None
    if network.version != 4:
        raise InvalidNetworkConfig(f"invalid {what} {text}: IPv6 is not supported yet")
    if str(network) != text:
        raise InvalidNetworkConfig(
            f"invalid network config:\ninvalid {what} {text}: it should be {network}"
        )
    if network.prefixlen > 30:
        raise InvalidNetworkConfig(
            f"invalid network config:\ninvalid {what} {text}: "
            "too small for a gateway and a container (the prefix must be /30 or shorter)"
        )
    return network


def _gateway(text: str, subnet: Net) -> Addr:
    if not text:
        return next(subnet.hosts())
    try:
        gateway = Addr(text)
    except ValueError:
        raise InvalidNetworkConfig(
            f"invalid network config:\ninvalid gateway {text}: ParseAddr({text!r}): "
            "not an IPv4 address"
        ) from None
    if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
        raise InvalidNetworkConfig(
            f"invalid network config:\ninvalid gateway {text}: it should be within subnet {subnet}"
        )
    return gateway


def _refuse_overlap(subnet: Net, taken: Iterable[Net]) -> None:
    if any(subnet.overlaps(other) for other in taken):
        raise PoolOverlap(
            "invalid pool request: Pool overlaps with other one on this address space"
        )


def from_pools(taken: Iterable[Net]) -> Subnet:
    """The first default pool that overlaps nothing taken (the default bridge's included)."""
    taken = list(taken)
    for pool in _POOLS:
        if pool != DEFAULT_BRIDGE_SUBNET and not any(pool.overlaps(t) for t in taken):
            return Subnet(pool, next(pool.hosts()))
    raise PoolExhausted(
        "could not find an available, non-overlapping IPv4 address pool among the defaults "
        "to assign to the network"
    )


def routed(proc_net_route: str) -> list[Net]:
    """The networks the VM already routes (/proc/net/route: little-endian hex), the default
    route apart: dockerd leaves pools that overlap them alone, so a new network never
    hides the VM's own (10.0.2.0/24 under QEMU's user networking)."""
    found = []
    for line in proc_net_route.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[7] == "00000000":
            continue
        destination = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
        found.append(Net(f"{destination}/{mask}", strict=False))
    return found


def default_bridge() -> Subnet:
    return Subnet(DEFAULT_BRIDGE_SUBNET, Addr("172.17.0.1"))


def address(subnet: Subnet, taken: set[Addr], wanted: str = "") -> Addr:
    """`wanted` if given and free, else the lowest free address of the range."""
    taken = taken | subnet.reserved()
    if wanted:
        return _static(subnet, taken, wanted)
    pool = subnet.ip_range or subnet.subnet
    for candidate in pool.hosts():
        if candidate != subnet.gateway and candidate not in taken:
            return candidate
    raise PoolExhausted(f"no available IPv4 addresses on this network's address pools: {pool}")


def _static(subnet: Subnet, taken: set[Addr], wanted: str) -> Addr:
    try:
        addr = Addr(wanted)
    except ValueError:
        raise InvalidNetworkConfig(f"invalid IPv4 address: {wanted}") from None
    if addr not in subnet.subnet:
        raise InvalidNetworkConfig(
            f"no configured subnet or ip-range contain the IP address {wanted}"
        )
    if addr == subnet.gateway or addr in taken:
        raise PoolExhausted(f"Address already in use: {wanted}")
    return addr
