"""SSH keys made on the host: the user's key to log in, and the VM's own host key, which the
host generates so it can pin it before the first boot (no trust-on-first-use)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str
    public_openssh: str  # "ssh-ed25519 AAAA... comment"


def generate(comment: str) -> KeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return KeyPair(private, f"{public} {comment}")


def save(pair: KeyPair, private_path: Path) -> None:
    """Private key 0600 (written so it is never readable by others, even briefly); .pub 0644."""
    private_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = private_path.with_name(f".{private_path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pair.private_openssh)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, private_path)
    public_path = private_path.with_name(private_path.name + ".pub")
    public_path.write_text(pair.public_openssh + "\n")


def load(private_path: Path) -> KeyPair:
    public_path = private_path.with_name(private_path.name + ".pub")
    return KeyPair(private_path.read_text(), public_path.read_text().strip())


def ensure(private_path: Path, comment: str) -> KeyPair:
    """The key pair at `private_path`, made on first use."""
    if private_path.exists():
        return load(private_path)
    pair = generate(comment)
    save(pair, private_path)
    return pair
