"""A quick run's request as docker-py's create_container arguments (pure): the ports it
exposes and binds, and its folders bound at the same path as the VM sees them."""

from __future__ import annotations

from vmctl import config as vmconfig


def exposed_ports(ports: tuple[str, ...]) -> list[tuple[int, str]]:
    """docker-py's exposed ports: (80, "tcp"), as it would turn "53/udp" into 53/udp/tcp."""
    found = []
    for spec in ports:
        number, _, proto = spec.rpartition(":")[2].partition("/")
        found.append((int(number), proto or "tcp"))
    return found


def port_bindings(ports: tuple[str, ...]) -> dict[str, int]:
    bindings: dict[str, int] = {}
    for spec in ports:
        host, _, inside = spec.rpartition(":")
        bindings[inside] = int(host)
    return bindings


def binds(folders: tuple[str, ...]) -> list[str]:
    """Each folder at the same path, as the VM sees it (`/c/Users/me/src` on Windows)."""
    return [f"{vmconfig.in_vm(f)}:{vmconfig.in_vm(f)}" for f in folders]
