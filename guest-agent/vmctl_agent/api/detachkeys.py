"""Detach keys: the byte sequence (ctrl-p ctrl-q unless asked otherwise) that, typed into an
attach or exec session's stdin, ends the client's session and leaves the container running.
As in dockerd, only a session with a terminal watches for them: stdin without one is data
(a file piped in must arrive byte for byte).

The spelling is Docker's (`ctrl-p,ctrl-q`, `a,b`, `ctrl-@`, `DEL`): `detachKeys` on attach
(`docker start -a` and `docker run` attach too), `DetachKeys` in an exec's create body, or
`detachKeys` on its start.
"""

from __future__ import annotations

from vmctl_agent.api.http import ApiError

DEFAULT = "ctrl-p,ctrl-q"
_CONTROLS = "@abcdefghijklmnopqrstuvwxyz[\\]^_"  # ctrl-@ is 0, ctrl-a 1, ... ctrl-_ 31


def parse(spec: str) -> bytes:
    """`ctrl-p,ctrl-q` -> b"\\x10\\x11"; a 400 in Docker's words for what is not a key."""
    codes = bytearray()
    for key in (spec or DEFAULT).split(","):
        code = _code(key)
        if code is None:
            raise ApiError(400, f"Invalid detach keys ({spec}) provided")
        codes.append(code)
    return bytes(codes)


def _code(key: str) -> int | None:
    if len(key) == 1:
        return ord(key) if ord(key) < 256 else None
    if key == "DEL":
        return 127
    if key.startswith("ctrl-") and len(key) == 6 and key[5] in _CONTROLS:
        return _CONTROLS.index(key[5])
    return None


class Scanner:
    """Watches stdin for the sequence as it streams by: bytes that may start it are held back
    until they either complete it (detach; they are never forwarded) or turn out not to."""

    def __init__(self, keys: bytes, tty: bool) -> None:
        self.keys = keys if tty else b""
        self.held = b""
        self.detached = False

    def feed(self, data: bytes) -> bytes:
        """What of `data` (and of what was held) to forward to the process now."""
        if not self.keys:
            return data
        out = bytearray()
        for byte in data:
            if self.detached:
                break
            self.held += bytes([byte])
            if self.keys.startswith(self.held):
                self.detached = self.held == self.keys
                continue
            out += self.held
            self.held = b""
        return bytes(out)
