"""One pass over a layer blob: copy it to disk, hash it, decompress it, hash the tar, and hand
the tar to the extractor, all while it downloads.

`BlobStream` is a forward-only file: tarfile reads headers from it (`read`, `tell`, and `seek`
that only skips ahead), and file contents go straight from its buffer to disk (`copy_to`), with
no copy in between. Sizes are checked as bytes arrive (a registry that sends more than the
descriptor says is cut off at once); digests are checked by `finish()`.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zlib
from collections.abc import Callable
from typing import BinaryIO, Protocol

from vmctl_agent.errors import UnsupportedManifest, VerificationError

_CHUNK = 1 << 20
_COMPACT = 4 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Source(Protocol):
    def read(self, size: int = -1) -> bytes: ...


class Cancelled(Exception):
    """Another layer of the same pull failed; stop this one."""


class BlobStream:
    """A file-like view of the uncompressed layer inside compressed blob `source`."""

    def __init__(
        self,
        source: Source,
        sink: BinaryIO | None,
        expected_size: int,
        on_bytes: Callable[[int], None] = lambda n: None,
        cancel: threading.Event | None = None,
    ) -> None:
        self._source = source
        self._sink = sink
        self._expected = expected_size
        self._on_bytes = on_bytes
        self._cancel = cancel or threading.Event()
        self._compressed = hashlib.sha256()
        self._uncompressed = hashlib.sha256()
        self.size = 0
        self.uncompressed_size = 0
        self._buffer = bytearray()
        self._pos = 0  # read position in _buffer
        self._offset = 0  # read position in the uncompressed stream
        self._decoder: zlib._Decompress | None = None
        self._mode: str | None = None
        self._eof = False

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes of the uncompressed stream (fewer only at its end)."""
        want = size if size >= 0 else 1 << 62
        while len(self._buffer) - self._pos < want and not self._eof:
            self._fill()
        end = min(self._pos + want, len(self._buffer))
        with memoryview(self._buffer) as view:
            data = bytes(view[self._pos : end])
        self._advance(end)
        return data

    def copy_to(self, fd: int, size: int) -> None:
        """Write the next `size` bytes to `fd` straight from the buffer."""
        while size:
            if self._pos == len(self._buffer):
                if self._eof:
                    raise VerificationError("layer ends in the middle of a file")
                self._fill()
                continue
            end = min(self._pos + size, len(self._buffer))
            with memoryview(self._buffer) as view:
                written = os.write(fd, view[self._pos : end])
            size -= written
            self._advance(self._pos + written)

    def tell(self) -> int:
        return self._offset

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Skip ahead to `offset`; a layer stream cannot go back."""
        if whence != io.SEEK_SET or offset < self._offset:
            raise io.UnsupportedOperation("a layer stream only seeks forward")
        while self._offset < offset:
            if not self.read(min(offset - self._offset, _CHUNK)):
                break
        return self._offset

    def _advance(self, end: int) -> None:
        self._offset += end - self._pos
        self._pos = end
        if self._pos >= _COMPACT or self._pos == len(self._buffer):
            del self._buffer[: self._pos]
            self._pos = 0

    def finish(self) -> tuple[str, str]:
        """Drain what tarfile left unread; return (compressed digest, uncompressed digest)."""
        while not self._eof:
            self._fill()
            self._advance(len(self._buffer))
        if self.size != self._expected:
            raise VerificationError(
                f"blob is {self.size} bytes but its descriptor says {self._expected}"
            )
        return "sha256:" + self._compressed.hexdigest(), "sha256:" + self._uncompressed.hexdigest()

    def _fill(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()
        if self._decoder is not None and self._decoder.unconsumed_tail:
            self._emit(self._decoder.decompress(self._decoder.unconsumed_tail, _CHUNK))
            return
        raw = self._raw()
        if not raw:
            self._end()
            return
        self._decode(raw)

    def _raw(self) -> bytes:
        raw = self._source.read(_CHUNK)
        if not raw:
            return raw
        self.size += len(raw)
        if self.size > self._expected:
            raise VerificationError(
                f"blob is larger than the {self._expected} bytes its descriptor says"
            )
        self._compressed.update(raw)
        if self._sink is not None:
            self._sink.write(raw)
        self._on_bytes(len(raw))
        return raw

    def _decode(self, raw: bytes) -> None:
        if self._mode is None:
            self._mode = _detect(raw)
        if self._mode == "tar":
            self._emit(raw)
            return
        if self._decoder is not None and self._decoder.eof:
            raw = self._decoder.unused_data + raw  # the next member of a multi-member gzip
            self._decoder = None
        if self._decoder is None:
            self._decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            self._emit(self._decoder.decompress(raw, _CHUNK))
        except zlib.error as e:
            raise VerificationError(f"layer is not valid gzip: {e}") from e

    def _end(self) -> None:
        if self._decoder is not None:
            if not self._decoder.eof:
                raise VerificationError("layer's gzip stream is truncated")
            if self._decoder.unused_data.strip(b"\0"):
                leftover, self._decoder = self._decoder.unused_data, None
                self._decode(leftover)
                return
        self._eof = True

    def _emit(self, data: bytes) -> None:
        self._uncompressed.update(data)
        self.uncompressed_size += len(data)
        self._buffer += data


def _detect(head: bytes) -> str:
    if head.startswith(_ZSTD_MAGIC):
        raise UnsupportedManifest(
            "zstd-compressed layers are not supported yet; pull a gzip variant of this image"
        )
    return "gzip" if head.startswith(_GZIP_MAGIC) else "tar"
