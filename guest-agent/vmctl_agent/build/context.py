"""The build context: the request body (a tar, plain or gzip, bzip2 or xz compressed)
unpacked into the build's own directory by the image store's layer extractor, so no entry
(`..`, an absolute name, a path through a symlink, a hard link out) can write outside it;
then the Dockerfile read and `.dockerignore` applied (the docker CLI has applied it already;
other clients may not have).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import posixpath
import shutil
from pathlib import Path

from vmctl_agent.build import ignore
from vmctl_agent.build.dockerfile import DockerfileError
from vmctl_agent.build.overlay import scoped
from vmctl_agent.errors import AgentError, UnsafeLayer
from vmctl_agent.store.layers import LayerExtractor

_OPENERS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}


class ContextError(AgentError):
    """The context is not a tar we can read (answered 400)."""


def receive(body: io.RawIOBase, workspace: Path) -> Path:
    """Spool and unpack the context into `workspace/context`; its path."""
    spooled = workspace / "context.tar"
    try:
        spool_tar(body, spooled)
        root = workspace / "context"
        root.mkdir()
        with open(spooled, "rb") as stream:
            LayerExtractor(str(root)).extract(stream)
    except UnsafeLayer as e:
        raise ContextError(str(e).replace("layer", "build context")) from None
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise ContextError(f"the build context is not a readable tar archive: {e}") from None
    finally:
        spooled.unlink(missing_ok=True)
    return root


def spool_tar(body: io.RawIOBase, path: Path) -> None:
    """The body as a plain tar file, decompressed, and padded with the end-of-archive
    blocks: the docker CLI's `-f -` context ends its last member unpadded (Go's reader does
    not mind; Python's tarfile does)."""
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as out:
        shutil.copyfileobj(body, out, 1 << 20)
    opener = _opener(raw)
    if opener is None:
        os.rename(raw, path)
    else:
        with opener(raw, "rb") as source, open(path, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
        raw.unlink()
    size = path.stat().st_size
    os.truncate(path, size + (-size % 512) + 1024)


def _opener(path: Path):
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, opener in _OPENERS.items():
        if head.startswith(magic):
            return opener
    return None


def read_dockerfile(root: Path, name: str) -> str:
    """The Dockerfile's text (`name` is a path in the context)."""
    name = name or "Dockerfile"
    path = scoped(str(root), posixpath.normpath("/" + name))
    if not os.path.isfile(path) and name == "Dockerfile":
        path = scoped(str(root), "/dockerfile")  # dockerd accepts the lower-case name too
    if not os.path.isfile(path):
        raise DockerfileError(f"Cannot locate specified Dockerfile: {name}")
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def apply_dockerignore(root: Path) -> None:
    """Remove what `.dockerignore` leaves out (a directory stays if an exception is under it)."""
    try:
        patterns = ignore.read((root / ".dockerignore").read_text("utf-8", "replace"))
    except FileNotFoundError:
        return
    if not patterns:
        return
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if not ignore.ignored(rel, patterns):
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                if not os.listdir(path):
                    os.rmdir(path)
            else:
                os.unlink(path)
