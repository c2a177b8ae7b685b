"""Published ports, as `docker run -p` / `-P` ask for them and `docker inspect` / `docker ps`
show them. Pure functions: what is asked is checked here, what is bound is proxy.py's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vmctl_agent.errors import AgentError

PROTOCOLS = ("tcp", "udp")


class InvalidPort(AgentError):
    """400: a port out of range, a protocol we do not carry, a malformed binding."""


class PortAllocated(AgentError):
    """500, as dockerd: the host port is taken."""


@dataclass(frozen=True)
class Binding:
    proto: str  # "tcp" or "udp"
    port: int  # in the container
    host_ip: str = ""  # "": every address (0.0.0.0)
    host_port: int = 0  # 0: any free port

    @property
    def key(self) -> str:
        return f"{self.port}/{self.proto}"

    def to_json(self) -> dict:
        return {"proto": self.proto, "port": self.port, "host_ip": self.host_ip,
                "host_port": self.host_port}  # fmt: skip


def port_key(key: str) -> tuple[int, str]:
    """`80`, `80/tcp`, `53/udp` → (port, protocol), checked."""
    number, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise InvalidPort(f"invalid proto: {proto} (only tcp and udp ports are published)")
    return _number(number, "containerPort"), proto


def _number(text: str, what: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise InvalidPort(f"invalid {what}: {text}")
    return int(text)


def requested(port_bindings: dict, publish_all: bool, exposed: Iterable[str]) -> list[Binding]:
    """Every binding asked for: PortBindings, then with -P each exposed port not bound."""
    out = []
    for key, hosts in (port_bindings or {}).items():
        port, proto = port_key(key)
        for host in hosts or [{}]:
            out.append(Binding(proto, port, _host_ip(host), _host_port(host)))
    if publish_all:
        bound = {b.key for b in out}
        for key in exposed:
            port, proto = port_key(key)
            if f"{port}/{proto}" not in bound:
                out.append(Binding(proto, port))
    return out


def _host_ip(host: dict) -> str:
    ip = (host or {}).get("HostIp") or ""
    if ip in ("", "0.0.0.0"):
        return ""
    try:
        ipaddress.IPv4Address(ip)
    except ValueError:
        raise InvalidPort(f"invalid IP address: {ip} (ports are published on IPv4)") from None
    return ip


def _host_port(host: dict) -> int:
    text = str((host or {}).get("HostPort") or "")
    if "-" in text:
        raise InvalidPort(f"invalid hostPort: {text} (a range is given one port per binding)")
    return _number(text, "hostPort") if text and text != "0" else 0


def inspect_ports(bound: Sequence[Binding], exposed: Iterable[str]) -> dict:
    """NetworkSettings.Ports: each exposed or published port, with its host bindings."""
    out: dict = {}
    for key in exposed:
        port, proto = port_key(key)
        out[f"{port}/{proto}"] = None
    for b in bound:
        entry = {"HostIp": b.host_ip or "0.0.0.0", "HostPort": str(b.host_port)}
        out[b.key] = [*(out.get(b.key) or []), entry]
    return out


def list_ports(bound: Sequence[Binding], exposed: Iterable[str]) -> list[dict]:
    """`docker ps`'s Ports: published ones with their host side, exposed ones without."""
    rows = [{"IP": b.host_ip or "0.0.0.0", "PrivatePort": b.port, "PublicPort": b.host_port,
             "Type": b.proto} for b in bound]  # fmt: skip
    published = {b.key for b in bound}
    for key in exposed:
        port, proto = port_key(key)
        if f"{port}/{proto}" not in published:
            rows.append({"PrivatePort": port, "Type": proto})
    return rows
