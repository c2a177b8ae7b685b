"""/etc/hosts and /etc/resolv.conf for a container on a bridge network, as Docker writes them:
hosts has the defaults, then --add-host entries, then the container's own address and
hostname; resolv.conf is the VM's (loopback servers dropped) on the default bridge, and the
embedded resolver at 127.0.0.11 on user-defined networks. --dns* replace what they name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from vmctl_agent.runtime.containerconfig import FALLBACK_DNS, HOSTS

EMBEDDED_DNS = "127.0.0.11"
VM_RESOLV_CONF = "/etc/resolv.conf"
# With systemd-resolved, /etc/resolv.conf names only its stub (127.0.0.53), which a container
# cannot reach; this file names the servers it uses, and dockerd reads it instead.
RESOLVED_UPSTREAM = "/run/systemd/resolve/resolv.conf"


@dataclass(frozen=True)
class DnsSettings:
    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def hosts(hostname: str, address: str, extra: Sequence[tuple[str, str]]) -> str:
    """`extra` is (name, address) pairs, host-gateway already replaced."""
    lines = [f"{ip}\t{name}" for name, ip in extra]
    if address:
        lines.append(f"{address}\t{hostname}")
    return HOSTS + "".join(line + "\n" for line in lines)


def resolv(embedded: bool, dns: DnsSettings) -> str:
    """The VM's resolv.conf with --dns, --dns-search and --dns-option on top; on a
    user-defined network the embedded resolver answers (and forwards the rest)."""
    base = vm_dns()
    servers = [EMBEDDED_DNS] if embedded else list(dns.servers or base.servers)
    search = list(dns.search or base.search)
    options = list(dns.options or base.options)
    if embedded and not any(o.startswith("ndots:") for o in options):
        options.append("ndots:0")
    lines = [f"nameserver {s}" for s in servers]
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def _parse(text: str) -> DnsSettings:
    servers, search, options = [], [], []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0].startswith(("#", ";")):
            continue
        if parts[0] == "nameserver":
            servers.append(parts[1])
        elif parts[0] in ("search", "domain"):
            search = parts[1:]
        elif parts[0] == "options":
            options += parts[1:]
    return DnsSettings(tuple(servers), tuple(search), tuple(options))


def upstream_servers() -> tuple[str, ...]:
    """Where the embedded resolver forwards what it does not know: the VM's servers, its
    loopback ones too (the resolver runs in the VM's namespace)."""
    return _parse(_read(VM_RESOLV_CONF)).servers


def vm_dns(main: str = VM_RESOLV_CONF, resolved: str = RESOLVED_UPSTREAM) -> DnsSettings:
    """The VM's DNS as a container on the default bridge can use it: loopback servers
    dropped (systemd-resolved's upstream file used when only its stub is named), Google's
    public servers if nothing is left, as dockerd does."""
    settings = _parse(_read(main))
    if settings.servers and all(_loopback(s) for s in settings.servers):
        upstream = _parse(_read(resolved))
        settings = DnsSettings(upstream.servers, settings.search, settings.options)
    servers = tuple(s for s in settings.servers if not _loopback(s))
    if not servers:
        servers = tuple(line.split()[1] for line in FALLBACK_DNS.splitlines())
    return DnsSettings(servers, settings.search, settings.options)


def _loopback(server: str) -> bool:
    try:
        return ipaddress.ip_address(server).is_loopback
    except ValueError:
        return False


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def extra_hosts(entries: Sequence[str], host_gateway: str) -> list[tuple[str, str]]:
    """--add-host `name:ip` (or `name=ip`); `host-gateway` is the gateway to the VM."""
    out = []
    for entry in entries:
        sep = "=" if "=" in entry else ":"
        name, _, ip = entry.partition(sep)
        ip = host_gateway if ip == "host-gateway" else ip.strip("[]")
        if not name or not _is_ip(ip):
            raise ValueError(f'invalid IP address in add-host: "{ip}"')
        out.append((name, ip))
    return out


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
