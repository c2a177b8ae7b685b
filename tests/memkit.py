"""A process's memory as /proc tells it, and what the guest's kernel can make of it.

Debian's kernels (the guest's 6.1 cloud kernel) have transparent huge pages `always`, where
these machines have `madvise`, and 6.1 still backs thread stacks with them (6.7 stopped:
MAP_STACK means no huge pages). khugepaged (`max_ptes_none` 511) turns any 2 MiB block of an
anonymous mapping with one page present into a whole huge page. `guest_rss` is that bound,
read from the page map: a process's RSS in the guest, measured on this host. A process that
opted out (`THP_enabled: 0`) gets no huge pages: its RSS is the guest's too.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

PAGE, HUGE = 4096, 2 << 20
_PER_BLOCK = HUGE // PAGE


def memory(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile (KiB), Threads, and Pss (KiB) of `pid`."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
            found[key] = int(value.split()[0])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            found["Pss"] = int(line.split()[1])
    return found


def huge_pages_allowed(pid: int) -> bool:
    """False once the process opted out (prctl PR_SET_THP_DISABLE)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("THP_enabled:"):
            return line.split()[1] == "1"
    return True


def guest_rss(pid: int) -> int:
    """KiB: the RSS `pid` can reach under THP=always (as read, if it opted out)."""
    rss = memory(pid)["VmRSS"]
    if not huge_pages_allowed(pid):
        return rss
    mappings = list(_anonymous_pages(pid))
    present = sum(sum(pages) for _, pages in mappings) * PAGE
    return rss + (sum(map(block_bound, mappings)) - present) // 1024


def _anonymous_pages(pid: int) -> Iterator[tuple[int, list[bool]]]:
    """Per private writable anonymous mapping: (its start, each page's present bit)."""
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            fields = line.split()
            name = fields[5] if len(fields) > 5 else ""
            if fields[1] != "rw-p" or name not in ("", "[heap]", "[stack]"):
                continue
            low, high = (int(x, 16) for x in fields[0].split("-"))
            pagemap.seek(low // PAGE * 8)
            raw = pagemap.read((high - low) // PAGE * 8)
            yield low, [bool(v >> 63) for v in struct.unpack(f"{len(raw) // 8}Q", raw)]


def block_bound(mapping: tuple[int, list[bool]]) -> int:
    """Bytes: the present pages outside whole aligned 2 MiB blocks, and 2 MiB for each such
    block with a page present."""
    low, present = mapping
    first = min((-low % HUGE) // PAGE, len(present))
    last = first + (len(present) - first) // _PER_BLOCK * _PER_BLOCK
    outside = (sum(present[:first]) + sum(present[last:])) * PAGE
    blocks = (present[i : i + _PER_BLOCK] for i in range(first, last, _PER_BLOCK))
    return outside + sum(HUGE for block in blocks if any(block))
