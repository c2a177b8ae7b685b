"""HostConfig.LogConfig: the json-file driver with its `max-size` and `max-file` options, or
`none`, checked as dockerd checks them. `none` keeps no log for `docker logs`; the shim still
writes one file of at most NONE_KEEP bytes (what an attach with logs=1 replays; attaches read
the live output from the shim's taps, not from this file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmctl_agent.runtime.spec import InvalidSpec

DRIVERS = ("json-file", "none")
NONE_KEEP = 1024 * 1024
# Options dockerd's json-file takes that change what is written: refused until honoured.
NOT_YET = ("compress", "labels", "labels-regex", "env", "env-regex", "tag")
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15}
_SIZE = re.compile(r"(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?")


@dataclass(frozen=True)
class Rotation:
    max_size: int = 0  # bytes; 0: never rotated
    max_files: int = 1


NO_ROTATION = Rotation()


def rotation(driver: str, options: dict[str, str]) -> Rotation:
    """What the shim's writer does for this configuration (the driver known to be one of
    DRIVERS, or refused as "not supported yet" by the API's table)."""
    if driver == "none":
        for name in options:
            raise InvalidSpec(f"unknown log opt '{name}' for none log driver")
        return Rotation(NONE_KEEP, 1)
    for name in options:
        if name in NOT_YET:
            raise InvalidSpec(f"log opt '{name}' is not supported by this engine yet")
        if name not in ("max-size", "max-file"):
            raise InvalidSpec(f"unknown log opt '{name}' for json-file log driver")
    size = _size(options["max-size"]) if "max-size" in options else 0
    files = _files(options["max-file"]) if "max-file" in options else 1
    return Rotation(size, files if size else 1)  # dockerd: max-file alone rotates nothing


def _size(text: str) -> int:
    """go-units' FromHumanSize: decimal units ("10m" and "10MB" are 10,000,000 bytes)."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise InvalidSpec(f"invalid size: '{text}'")
    value = int(float(match[1]) * _UNITS[(match[2] or "").lower()])
    if value <= 0:
        raise InvalidSpec("max-size must be a positive number")
    return value


def _files(text: str) -> int:
    try:
        files = int(text)
    except ValueError:
        raise InvalidSpec(f'strconv.Atoi: parsing "{text}": invalid syntax') from None
    if files < 1:
        raise InvalidSpec("max-file cannot be less than 1")
    return files
