"""Helpers for tests that drive the agent's image store against a registry."""

from __future__ import annotations

import itertools
from pathlib import Path

import imagekit as ik
from vmctl_agent.store.auth import Credentials
from vmctl_agent.store.images import ImageStore
from vmctl_agent.store.manifest import Platform
from vmctl_agent.store.pull import Puller
from vmctl_agent.store.registry import RegistryClient, RegistryConfig

_names = itertools.count()
AMD64 = Platform("linux", "amd64")


def unique_repo(prefix: str = "test") -> str:
    """Tests share the session registry: each takes its own repository."""
    return f"{prefix}/r{next(_names)}"


def puller(
    store: ImageStore,
    *,
    mirrors: tuple[str, ...] = (),
    insecure: tuple[str, ...] = (),
    credentials: Credentials | None = None,
) -> Puller:
    client = RegistryClient(RegistryConfig(mirrors, insecure), credentials=lambda host: credentials)
    return Puller(store, client, AMD64)


def pull(store: ImageStore, ref: str, **kw) -> tuple[object, list[dict]]:
    """Pull `ref`, returning the record and every progress message."""
    messages: list[dict] = []
    record = puller(store, **kw).pull(ref, messages.append)
    return record, messages


def small_image(tag: bytes = b"", **kw) -> ik.Image:
    """busybox plus one small layer whose content is `tag` (so images differ by tag)."""
    extra = ik.tar_bytes([ik.file("etc/image-tag", tag or b"plain")])
    kw.setdefault("config", {"Cmd": ["/bin/sh"]})
    return ik.build_image([ik.busybox_layer(), extra], **kw)


def visible_state(root: Path) -> dict[str, list[str]]:
    """Everything a reader of the store can see: records, tags, layers and blobs."""
    tags = root / "repositories.json"
    return {
        "images": sorted(p.name for p in (root / "images").glob("*.json")),
        "layers": sorted(p.name for p in (root / "layers").iterdir()),
        "blobs": sorted(p.name for p in (root / "blobs" / "sha256").iterdir()),
        "tags": [tags.read_text()] if tags.exists() else [],
    }


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "tmp").iterdir())
