"""Each interface's traffic counters as the container sees them, from its namespace's
/proc/<pid>/net/dev, in the shape of `docker stats`' "networks" (loopback left out, as
dockerd leaves it out)."""

from __future__ import annotations

_FIELDS = {  # dockerd's name: the column in /proc/net/dev (8 receive columns, then transmit)
    "rx_bytes": 0, "rx_packets": 1, "rx_errors": 2, "rx_dropped": 3,
    "tx_bytes": 8, "tx_packets": 9, "tx_errors": 10, "tx_dropped": 11,
}  # fmt: skip


def parse(text: str) -> dict[str, dict[str, int]]:
    """/proc/net/dev's table: counters by interface name."""
    found = {}
    for line in text.splitlines()[2:]:
        name, _, numbers = line.partition(":")
        columns = numbers.split()
        if name.strip() != "lo" and len(columns) >= 16:
            found[name.strip()] = {k: int(columns[i]) for k, i in _FIELDS.items()}
    return found


def of_process(pid: int) -> dict[str, dict[str, int]]:
    """The interfaces of `pid`'s network namespace; empty once it has gone."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            return parse(f.read())
    except (FileNotFoundError, ProcessLookupError):
        return {}
