"""DNS messages, as much of RFC 1035 as the embedded resolver needs: a query's id, name and
type read, and an answer with A records (or an error code) written. Pure functions."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TYPE_A = 1
CLASS_IN = 1
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3
TTL = 600


class BadMessage(ValueError):
    pass


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    question: bytes  # as sent, echoed in the answer


def parse_query(data: bytes) -> Query:
    if len(data) < 12:
        raise BadMessage("shorter than a DNS header")
    msg_id, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qdcount != 1:
        raise BadMessage("not a query with one question")
    labels, offset = [], 12
    while True:
        if offset >= len(data):
            raise BadMessage("name runs past the end")
        length = data[offset]
        if length & 0xC0:
            raise BadMessage("compressed name in a question")
        offset += 1
        if length == 0:
            break
        labels.append(data[offset : offset + length].decode("ascii", "replace"))
        offset += length
    if offset + 4 > len(data):
        raise BadMessage("question without type and class")
    qtype, qclass = struct.unpack("!HH", data[offset : offset + 4])
    name = ".".join(labels).lower()
    return Query(msg_id, flags, name, qtype, qclass, data[12 : offset + 4])


def answer(query: Query, addresses: list[str], rcode: int = NOERROR) -> bytes:
    """A response with A records for `addresses` (those that are of the asked type)."""
    records = [a for a in addresses if query.qtype == TYPE_A]
    flags = 0x8000 | 0x0400 | (query.flags & 0x0100) | 0x0080 | rcode  # QR AA RD RA
    header = struct.pack("!HHHHHH", query.id, flags, 1, len(records), 0, 0)
    body = b"".join(_a_record(a) for a in records)
    return header + query.question + body


def _a_record(address: str) -> bytes:
    rdata = ipaddress.IPv4Address(address).packed
    return struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, len(rdata)) + rdata


def failure(data: bytes, rcode: int) -> bytes | None:
    """An error answer to whatever `data` asked, if it was a readable query."""
    try:
        return answer(parse_query(data), [], rcode)
    except BadMessage:
        return None
