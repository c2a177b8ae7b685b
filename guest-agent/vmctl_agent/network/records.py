"""Networks and endpoints on disk, each written atomically, so they survive the agent being
killed and the VM rebooting (the bridges and rules are made again from them at start).

    <data-root>/network/networks/<id>.json     a network: Docker's fields and its bridge
    <data-root>/network/endpoints/<cid>.json   a container's attachments, by network id;
                                                address, MAC and veth while it runs
    <data-root>/network/netns/<cid>            a running container's network namespace
    <data-root>/network/ports/<cid>.json       a running container's published ports

The agent is the only writer; everything is read once at start and kept in memory.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from vmctl_agent import atomic
from vmctl_agent.network.ipam import Subnet


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    created: str
    driver: str  # "bridge", or "host" / "null" for the two built-in pseudo-networks
    subnets: tuple[Subnet, ...] = ()
    bridge: str = ""  # the Linux bridge's name
    internal: bool = False
    attachable: bool = False
    labels: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    ipam_options: dict | None = None  # as the client sent them: null or {} (none honoured)

    def to_json(self) -> dict:
        out = asdict(self)
        out["subnets"] = [s.to_json() for s in self.subnets]
        return out

    @classmethod
    def from_json(cls, data: dict) -> Network:
        subnets = tuple(Subnet.from_json(s) for s in data.get("subnets") or ())
        return cls(**{**data, "subnets": subnets})


@dataclass(frozen=True)
class Attachment:
    """A container on a network: what it asked for (kept across stops), and while it runs
    the endpoint it got."""

    network: str  # the network's id
    aliases: tuple[str, ...] = ()
    ipv4: str = ""  # asked for (--ip)
    mac: str = ""  # asked for (--mac-address)
    link_local: tuple[str, ...] = ()  # asked for (--link-local-ip): more addresses, each a /16
    driver_opts: dict = field(default_factory=dict)  # kept and shown; the bridge reads none
    links: tuple[str, ...] = ()  # "name:alias": alias answers for name, to this container only
    endpoint_id: str = ""  # the rest only while running
    run: str = ""  # which start made it (the start time): an older run's end leaves it be
    address: str = ""
    mac_address: str = ""
    veth: str = ""

    @property
    def active(self) -> bool:
        return bool(self.endpoint_id)

    def ended(self) -> Attachment:
        return replace(self, endpoint_id="", address="", mac_address="", veth="", run="")

    @classmethod
    def from_json(cls, data: dict) -> Attachment:
        lists = {k: tuple(data.get(k) or ()) for k in ("aliases", "link_local", "links")}
        return cls(**{**data, **lists})


class Records:
    """The records under `root`, kept in memory after one read."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("networks", "endpoints", "netns", "ports"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.networks = {n.id: n for n in self._read_networks()}
        self.endpoints = dict(self._read_endpoints())
        self.ports = {p.stem: atomic.read_json(p) for p in (root / "ports").glob("*.json")}

    def _read_networks(self):
        for path in (self.root / "networks").glob("*.json"):
            yield Network.from_json(atomic.read_json(path))

    def _read_endpoints(self):
        for path in (self.root / "endpoints").glob("*.json"):
            raw = atomic.read_json(path)
            yield path.stem, {k: Attachment.from_json(v) for k, v in raw.items()}

    def save_network(self, network: Network) -> None:
        atomic.write_json(self.root / "networks" / f"{network.id}.json", network.to_json())
        self.networks[network.id] = network

    def drop_network(self, network_id: str) -> None:
        (self.root / "networks" / f"{network_id}.json").unlink(missing_ok=True)
        atomic.fsync_dir(self.root / "networks")
        self.networks.pop(network_id, None)

    def save_endpoints(self, container_id: str, attachments: dict[str, Attachment]) -> None:
        path = self.root / "endpoints" / f"{container_id}.json"
        if not attachments:
            path.unlink(missing_ok=True)
            self.endpoints.pop(container_id, None)
            return
        atomic.write_json(path, {k: asdict(v) for k, v in attachments.items()})
        self.endpoints[container_id] = dict(attachments)

    def netns_path(self, container_id: str) -> Path:
        return self.root / "netns" / container_id

    def save_ports(self, container_id: str, bound: list[dict]) -> None:
        """What a running container has bound (host ports chosen by the kernel included)."""
        path = self.root / "ports" / f"{container_id}.json"
        if not bound:
            path.unlink(missing_ok=True)
            self.ports.pop(container_id, None)
            return
        atomic.write_json(path, bound)
        self.ports[container_id] = bound
