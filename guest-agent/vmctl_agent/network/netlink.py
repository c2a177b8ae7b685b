"""rtnetlink messages for what each container needs: its veth pair (the peer made straight
in its namespace), the host end in the bridge, and inside its address, links up and the
default route. Built by pure functions, sent by host.py (from a thread standing in the
container's namespace for the inside), so no process is started for each container.
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
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
RTA_GATEWAY, RTA_OIF = 5, 4
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1


def _message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, seq,
                       0) + body  # fmt: skip


def _attr(kind: int, data: bytes) -> bytes:
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)


def link_up(index: int, seq: int) -> bytes:
    return _message(RTM_NEWLINK, 0, seq, _ifinfo(index, IFF_UP))


def _ifinfo(index: int = 0, flags: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, flags)


def add_veth(name: str, peer: str, peer_mac: str, netns_fd: int, seq: int) -> bytes:
    """A veth pair `name` here and `peer` (with its MAC) in the namespace of `netns_fd`."""
    mac = bytes.fromhex(peer_mac.replace(":", ""))
    peer_info = _ifinfo() + _attr(IFLA_IFNAME, peer.encode() + b"\0") + _attr(IFLA_ADDRESS, mac)
    peer_info += _attr(IFLA_NET_NS_FD, struct.pack("=I", netns_fd))
    info = _attr(IFLA_INFO_KIND, b"veth\0") + _attr(
        IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info)
    )
    body = _ifinfo() + _attr(IFLA_IFNAME, name.encode() + b"\0") + _attr(IFLA_LINKINFO, info)
    return _message(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, seq, body)


def enslave_up(index: int, master: int, seq: int) -> bytes:
    """The link into the bridge `master`, and up."""
    body = _ifinfo(index, IFF_UP) + _attr(IFLA_MASTER, struct.pack("=I", master))
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
