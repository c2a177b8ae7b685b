"""rtnetlink messages for what a container's side of a veth needs (its address, links up,
the default route): built by pure functions, sent from a thread standing in the container's
namespace (host.py), so no `nsenter ip` process is started for each container.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLMSG_ERROR = 2
IFF_UP = 0x1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY, RTA_OIF = 5, 4
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, seq,
                       0) + body  # fmt: skip


def _attr(kind: int, data: bytes) -> bytes:
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)


def link_up(index: int, seq: int) -> bytes:
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
    return _message(RTM_NEWLINK, 0, seq, body)


def add_address(index: int, cidr: str, seq: int) -> bytes:
    interface = ipaddress.IPv4Interface(cidr)
    packed = interface.ip.packed
    body = struct.pack("=BBBBI", socket.AF_INET, interface.network.prefixlen, 0, 0, index)
    body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
    return _message(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def default_route(index: int, gateway: str, seq: int) -> bytes:
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                       RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)  # fmt: skip
    body += _attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed)
    body += _attr(RTA_OIF, struct.pack("=i", index))
    return _message(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def error_of(reply: bytes) -> int:
    """The errno an ack carries (0: done)."""
    _, kind, _, _, _ = struct.unpack("=IHHII", reply[:16])
    if kind != NLMSG_ERROR:
        return 0
    return -struct.unpack("=i", reply[16:20])[0]
