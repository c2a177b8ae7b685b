"""A build step's result as an image in the store, as dockerd's classic builder writes it:
the config with `container_config` (the step's command, which the cache compares), `history`
with `empty_layer` for steps that changed no file, the layers of the parent plus the step's
own, a schema 2 manifest, and the record's `parent`, so `docker history` can walk back and
`docker rmi` can take the intermediate images with it.

The cache (dockerd's: parent image plus the step's container config, whose command carries
the content hash of COPY and ADD sources) is a directory of small files, key -> image id,
beside the image records; an entry whose image is gone is a miss.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from vmctl_agent import __version__, atomic
from vmctl_agent.build.dispatch import StageState
from vmctl_agent.errors import AgentError
from vmctl_agent.store import manifest as mf
from vmctl_agent.store.images import ImageRecord, ImageStore

_CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def container_config(state: StageState, cmd: list[str]) -> dict:
    """The config the step ran with: the stage's, with the step's command."""
    config = copy.deepcopy(state.config)
    config["Cmd"] = cmd
    config["Image"] = state.image_id
    return config


def image_config(state: StageState, step_config: dict, container_id: str, created: str) -> dict:
    config = copy.deepcopy(state.config)
    config["Image"] = state.image_id
    body = {
        "architecture": "amd64",
        "config": config,
        "container": container_id,
        "container_config": step_config,
        "created": created,
        "docker_version": __version__,
        "history": state.history,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["diff_id"] for layer in state.layers]},
    }
    if state.author:
        body["author"] = state.author
    if state.history and state.history[-1].get("comment"):
        body["comment"] = state.history[-1]["comment"]  # dockerd's `docker commit -m`
    return body


def commit(
    store: ImageStore,
    state: StageState,
    step_config: dict,
    layer: dict | None,
    container_id: str = "",
    note: dict | None = None,
) -> str:
    """Add the step's image (a child of `state.image_id`) and make it the stage's image;
    `note` adds to its history entry (`docker commit`'s author and comment)."""
    created = now()
    entry = {"created": created, "created_by": " ".join(step_config.get("Cmd") or [])}
    entry.update(note or {})
    if layer is None:
        entry["empty_layer"] = True
    else:
        state.layers = [*state.layers, layer]
    state.history = [*state.history, entry]
    body = image_config(state, step_config, container_id, created)
    image_id = _put(store, body, state.layers, state.image_id)
    state.image_id = image_id
    return image_id


def _put(store: ImageStore, body: dict, layers: list[dict], parent: str) -> str:
    """The config and manifest blobs, then the record. The blobs are not fsynced one by
    one: the record carries this boot's id, so ImageStore.add syncs the filesystem (them
    with it) before it writes the record."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    image_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    store.content.put_blob(image_id, raw, durable=False)
    manifest = _manifest(image_id, len(raw), layers)
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    store.content.put_blob(manifest_digest, manifest, durable=False)
    record = ImageRecord(
        id=image_id,
        manifest_digest=manifest_digest,
        layers=layers,
        created=body["created"],
        pulled=time.time(),
        boot_id=atomic.boot_id(),
        parent=parent,
    )
    store.add(record, None)
    return image_id


def _manifest(config_digest: str, config_size: int, layers: list[dict]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mf.DOCKER_MANIFEST,
            "config": {"mediaType": _CONFIG_TYPE, "digest": config_digest, "size": config_size},
            "layers": [
                {
                    "mediaType": layer["media_type"],
                    "digest": layer["digest"],
                    "size": layer["compressed_size"],
                }
                for layer in layers
            ],
        },
        sort_keys=True,
    ).encode()


# -- the cache ---------------------------------------------------------------------------------


class BuildCache:
    """Step results by (parent image, step config)."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self.root = store.root / "buildcache"
        self.root.mkdir(exist_ok=True)

    def key(self, parent: str, step_config: dict) -> str:
        raw = json.dumps({"parent": parent, "config": step_config}, sort_keys=True)
        return hashlib.sha256(raw.encode()).hexdigest()

    def get(self, key: str) -> str | None:
        try:
            image_id = (self.root / key).read_text().strip()
        except FileNotFoundError:
            return None
        return image_id if self.store.exists(image_id) else None

    def put(self, key: str, image_id: str) -> None:
        atomic.write_bytes(self.root / key, image_id.encode(), durable=False)

    def entries(self) -> list[tuple[str, str]]:
        """(key, image id) of every entry whose image is still here."""
        found = []
        for path in sorted(self.root.iterdir()):
            image_id = self.get(path.name)
            if image_id is not None:
                found.append((path.name, image_id))
        return found

    def prune(self) -> list[str]:
        """Forget every entry (`docker builder prune`); the keys forgotten."""
        keys = [path.name for path in self.root.iterdir()]
        for key in keys:
            (self.root / key).unlink(missing_ok=True)
        return keys


def lineage(store: ImageStore, names: Sequence[str]) -> set[str] | None:
    """With --cache-from, the images a cached step may be (dockerd's rule: a source image or
    one of its parents); None without it (every local image). Names not found are skipped,
    as dockerd skips them."""
    if not names:
        return None
    found: set[str] = set()
    for name in names:
        try:
            image_id = store.get(name).id
        except AgentError:
            continue
        while image_id and image_id not in found:
            found.add(image_id)
            image_id = _parent(store, image_id)
    return found


def _parent(store: ImageStore, image_id: str) -> str:
    try:
        return store.get(image_id).record.parent
    except AgentError:
        return ""
