"""Render the app's mark (vmctl_gui.icons) into the files packagers want: a PNG, a Windows .ico
and a macOS .icns. Both containers hold PNGs, which every supported OS reads (Vista+, 10.7+),
so no image library beyond Qt is needed.

    python packaging/make_icons.py OUT_DIR
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
ICNS_TYPES = ((b"icp4", 16), (b"icp5", 32), (b"icp6", 64), (b"ic07", 128), (b"ic08", 256),
              (b"ic09", 512), (b"ic10", 1024))  # fmt: skip


def png(size: int) -> bytes:
    from PySide6.QtCore import QBuffer, QIODevice
    from vmctl_gui.icons import pixmap

    buffer = QBuffer()
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    pixmap(size).save(buffer, "PNG")
    return bytes(buffer.data())


def ico(images: dict[int, bytes]) -> bytes:
    """ICONDIR, one ICONDIRENTRY per size (0 means 256), then the PNGs."""
    header = struct.pack("<HHH", 0, 1, len(images))
    offset = len(header) + 16 * len(images)
    entries, blobs = b"", b""
    for size, data in images.items():
        side = 0 if size >= 256 else size
        entries += struct.pack("<BBBBHHII", side, side, 0, 0, 1, 32, len(data), offset)
        offset += len(data)
        blobs += data
    return header + entries + blobs


def icns(images: dict[bytes, bytes]) -> bytes:
    """'icns', the total length, then (type, length incl. its 8-byte header, PNG) per size."""
    body = b"".join(kind + struct.pack(">I", len(data) + 8) + data for kind, data in images.items())
    return b"icns" + struct.pack(">I", len(body) + 8) + body


def render(out: Path) -> dict[str, Path]:
    from PySide6.QtGui import QGuiApplication

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    _app = QGuiApplication.instance() or QGuiApplication([])
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "png": (out / "vmctl.png", png(512)),
        "ico": (out / "vmctl.ico", ico({size: png(size) for size in ICO_SIZES})),
        "icns": (out / "vmctl.icns", icns({kind: png(size) for kind, size in ICNS_TYPES})),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {kind: path for kind, (path, _data) in files.items()}


if __name__ == "__main__":
    for path in render(Path(sys.argv[1] if len(sys.argv) > 1 else "build/icons")).values():
        print(path)
