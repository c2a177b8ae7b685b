"""The guest agent as one file: a zipapp of `vmctl_agent`, deployed to the VM over SFTP.

Each module goes in twice, as source (for tracebacks) and as bytecode beside it, which
zipimport loads first; a zip cannot cache bytecode, and compiling 20 modules at every start
costs the guest 50 ms. The bytecode is hash-based and unchecked, so the archive is the same
bytes whenever the sources are (a stable hash decides whether to redeploy). An interpreter of
another version ignores it and compiles the source.

The guest runs it as `python3 -I -S vmctl-agent.pyz ...`: isolated, and without site-packages,
since the agent uses the standard library only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import sys
import tempfile
import zipfile
from pathlib import Path

import vmctl_agent

SHEBANG = b"#!/usr/bin/env python3\n"
MAIN = b"from vmctl_agent.cli import main\n\nraise SystemExit(main())\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)


BUNDLED_NAME = "vmctl-agent.pyz"  # packaging/vmctl.spec ships the zipapp under this name


def for_deploy(dest: Path) -> Path:
    """The zipapp to deploy: the one the packaged app ships (its sources are not there to
    build from), else built from the sources at `dest`."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle is not None and (Path(bundle) / BUNDLED_NAME).is_file():
        return Path(bundle) / BUNDLED_NAME
    return build(dest)


def package_dir() -> Path:
    return Path(vmctl_agent.__file__).resolve().parent


def build(dest: Path) -> Path:
    """Write the zipapp to `dest` atomically; returns `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(SHEBANG)
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
                _add(archive, "__main__.py", MAIN)
                root = package_dir()
                for source in sorted(root.rglob("*.py")):
                    if "__pycache__" in source.parts:
                        continue
                    name = f"vmctl_agent/{source.relative_to(root).as_posix()}"
                    data = source.read_bytes()
                    _add(archive, name, data)
                    _add(archive, name[:-3] + ".pyc", _bytecode(data, name))
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def digest(path: Path) -> str:
    """sha256 of the built zipapp: the host redeploys when the guest's copy differs."""
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)  # fixed time: reproducible bytes
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def _bytecode(source: bytes, name: str) -> bytes:
    """An unchecked hash-based .pyc. Marshal format 2, which has no back-references: later
    formats mark an object shared when its reference count says so, which depends on what
    else the building process holds, so the same source gave different bytes in pytest."""
    code = compile(source, name, "exec", dont_inherit=True)
    flags = 0b01  # hash-based, not checked against the source
    header = importlib.util.MAGIC_NUMBER + flags.to_bytes(4, "little")
    return header + importlib.util.source_hash(source) + marshal.dumps(code, 2)
