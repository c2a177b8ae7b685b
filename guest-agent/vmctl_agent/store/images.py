"""Image records and tags: what `docker images`, `inspect`, `tag` and `rmi` see.

    <data-root>/image/images/<hex>.json     one record per image (id = config digest)
    <data-root>/image/repositories.json     tags: full reference -> image id
    <data-root>/image/{blobs,layers,...}    the content store (content.py)

Records and tags change only under the index lock, each file replaced atomically. Layers and
blobs are freed with the last image that uses them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmctl_agent import atomic
from vmctl_agent.errors import AgentError, ImageConflict, ImageNotFound, InvalidReference
from vmctl_agent.store import reference as refs
from vmctl_agent.store.content import ContentStore, hex_of

# (container id, running) for each container created from an image id.
ContainerUsers = Callable[[str], list[tuple[str, bool]]]
ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time, as dockerd prints a time never set


@dataclass
class ImageRecord:
    id: str
    manifest_digest: str
    layers: list[dict]
    repo_digests: list[str] = field(default_factory=list)
    created: str = ""
    pulled: float = 0.0
    boot_id: str = ""  # the boot that wrote it, until add() has made it durable
    parent: str = ""  # the image a build step made this one from (dockerd's Parent)
    last_tag_time: str = ""  # when a tag was last made here (not by a pull or a load)

    @property
    def diff_ids(self) -> list[str]:
        return [layer["diff_id"] for layer in self.layers]

    @property
    def size(self) -> int:
        return sum(int(layer.get("size", 0)) for layer in self.layers)

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "manifest_digest": self.manifest_digest,
            "layers": self.layers,
            "repo_digests": self.repo_digests,
            "created": self.created,
            "pulled": self.pulled,
            "boot_id": self.boot_id,
            "parent": self.parent,
            "last_tag_time": self.last_tag_time,
        }


@dataclass(frozen=True)
class Image:
    """An image as users see it: the record plus its tags and config."""

    record: ImageRecord
    repo_tags: tuple[str, ...]
    config: dict

    @property
    def id(self) -> str:
        return self.record.id

    def inspect(self) -> dict[str, Any]:
        """`docker image inspect`'s fields."""
        cfg = self.config
        return {
            "Id": self.id,
            "RepoTags": [refs.parse(t).familiar() for t in self.repo_tags],
            "RepoDigests": [refs.parse(d).familiar() for d in self.record.repo_digests],
            "Parent": self.record.parent,
            "Comment": cfg.get("comment", ""),
            "Container": cfg.get("container", ""),
            "ContainerConfig": cfg.get("container_config") or {},
            "Created": cfg.get("created") or ZERO_TIME,
            "DockerVersion": cfg.get("docker_version", ""),
            "Author": cfg.get("author", ""),
            "Config": cfg.get("config") or {},
            "Architecture": cfg.get("architecture", ""),
            "Variant": cfg.get("variant", ""),
            "Os": cfg.get("os", ""),
            "Size": self.record.size,
            "RootFS": {"Type": "layers", "Layers": self.record.diff_ids},
            "Metadata": {"LastTagTime": self.record.last_tag_time or ZERO_TIME},
        }


class ImageStore:
    """Local images under `<data-root>/image`."""

    def __init__(self, root: Path, containers_using: ContainerUsers | None = None) -> None:
        self.root = root
        self.content = ContentStore(root)
        self._records = root / "images"
        self._records.mkdir(parents=True, exist_ok=True)
        self._tags_file = root / "repositories.json"
        self.containers_using = containers_using or (lambda image_id: [])

    # -- reading ----------------------------------------------------------------------------

    def list(self) -> list[Image]:
        tags = self._tags()
        records = [self._load(p) for p in sorted(self._records.glob("*.json"))]
        return [self._image(r, tags) for r in records if r is not None]

    def get(self, name: str) -> Image:
        """Find by reference (`busybox`, `repo@sha256:...`), full id, or unique id prefix."""
        record = self._find(name)
        return self._image(record, self._tags())

    def exists(self, image_id: str) -> bool:
        record = self._load(self._records / f"{hex_of(image_id)}.json")
        return record is not None and all(self.content.has_layer(d) for d in record.diff_ids)

    def _find(self, name: str) -> ImageRecord:
        tags = self._tags()
        record = self._by_reference(name, tags)
        if record is None:
            record = self._by_id(name)
        if record is None:
            raise ImageNotFound(f"No such image: {name}")
        return record

    def _by_reference(self, name: str, tags: dict[str, str]) -> ImageRecord | None:
        try:
            ref = refs.parse(name)
        except InvalidReference:
            return None
        if ref.digest:
            wanted = ref.with_digest(ref.digest)
            for record in filter(None, map(self._load, self._records.glob("*.json"))):
                if str(wanted) in record.repo_digests:
                    return record
            return None
        image_id = tags.get(str(ref))
        return self._load(self._records / f"{hex_of(image_id)}.json") if image_id else None

    def _by_id(self, name: str) -> ImageRecord | None:
        prefix = name.removeprefix("sha256:")
        if not prefix or not all(c in "0123456789abcdef" for c in prefix):
            return None
        found = [p for p in self._records.glob(f"{prefix}*.json")]
        if len(found) > 1:
            raise ImageConflict(f"image id prefix {name!r} is ambiguous: give more characters")
        return self._load(found[0]) if found else None

    def _load(self, path: Path) -> ImageRecord | None:
        try:
            return ImageRecord(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as e:
            raise AgentError(f"image record {path} is corrupt ({e}); remove it to continue") from e

    def _image(self, record: ImageRecord, tags: dict[str, str]) -> Image:
        config = json.loads(self.content.read_blob(record.id))
        mine = tuple(sorted(t for t, i in tags.items() if i == record.id))
        return Image(record, mine, config)

    def _tags(self) -> dict[str, str]:
        try:
            return json.loads(self._tags_file.read_text())["tags"]
        except FileNotFoundError:
            return {}

    # -- writing ----------------------------------------------------------------------------

    def _index_lock(self):
        return atomic.locked(self.content.locks / "index.lock")

    def add(self, record: ImageRecord, tag: refs.Reference | None) -> bool:
        """Record a pulled image and point `tag` at it; True if the tag moved (newer image).

        Durably: once this returns, the image survives the VM's power being cut (dockerd's
        containerd fsyncs what it commits too). One syncfs covers its layers and blobs, which
        were written without an fsync per file; the record is written after it, so a record
        on disk never names a layer the disk may not hold whole."""
        with self._index_lock():
            path = self._records / f"{hex_of(record.id)}.json"
            old = self._load(path)
            if old is not None:
                record.repo_digests = sorted(set(old.repo_digests) | set(record.repo_digests))
                record.last_tag_time = old.last_tag_time  # a pull is no tag made here
                if not old.boot_id:
                    record.boot_id = ""  # same config, same layers: durable already
            if record.boot_id:
                self._sync_layers(record)
            atomic.write_json(path, record.to_json())
            if tag is None:
                return old is None
            tags = self._tags()
            moved = tags.get(str(tag)) != record.id
            if moved:
                tags[str(tag)] = record.id
                self._write_tags(tags)
            return moved

    def tag(self, source: str, target: str, *, stamp: bool = True) -> None:
        """`docker tag SOURCE TARGET`. As dockerd, a tag made here (tag, build -t, commit,
        import) sets the image's LastTagTime, which `docker compose images` shows as its
        age; a load's tags, like a pull's, do not (`stamp=False`)."""
        ref = refs.parse(target)
        if ref.digest:
            raise InvalidReference("refusing to create a tag with a digest reference")
        with self._index_lock():
            record = self._find(source)
            tags = self._tags()
            tags[str(ref)] = record.id
            self._write_tags(tags)
            if stamp:
                record.last_tag_time = _now()
                atomic.write_json(self._records / f"{hex_of(record.id)}.json", record.to_json())

    def _write_tags(self, tags: dict[str, str]) -> None:
        atomic.write_json(self._tags_file, {"tags": dict(sorted(tags.items()))})

    def remove(self, name: str, *, force: bool = False) -> list[dict[str, str]]:
        """`docker rmi`: untag, and delete the image once nothing refers to it.

        By id: every tag goes (with force if there are several). By tag: that tag goes. By
        digest (`repo@sha256:...`): that digest reference goes. Returns dockerd's answer, a
        list of {"Untagged": ref} and {"Deleted": id}.
        """
        with self.content.gc_lock(shared=False), self._index_lock():
            record = self._find(name)
            tags = self._tags()
            mine = sorted(t for t, i in tags.items() if i == record.id)
            users = self.containers_using(record.id)
            ref = self._named_reference(name, tags)
            self._check_removable(name, record, mine, users, ref is None, force)
            has_children = self._has_children(record)
            if has_children and ref is None and not mine:
                raise ImageConflict(
                    f"conflict: unable to delete {record.short_id} (cannot be forced) - image "
                    "has dependent child images"
                )
            drop = mine if ref is None else [str(ref)] if ref.tag and not ref.digest else []
            events = [{"Untagged": refs.parse(t).familiar()} for t in drop]
            for t in drop:
                tags.pop(t)
            self._write_tags(tags)
            if ref is not None and ref.digest:
                events += self._drop_digest(record, ref)
            if len(drop) < len(mine) or users or (ref and ref.digest and record.repo_digests):
                return events
            if has_children:
                return events  # a build's parent: untagged, kept for its children
            events += self._untag_digests(record)
            return events + self._delete(record)

    def _named_reference(self, name: str, tags: dict[str, str]) -> refs.Reference | None:
        """The tag or digest reference `name` matched, or None if it matched an id."""
        if self._by_reference(name, tags) is None:
            return None
        return refs.parse(name)

    def _drop_digest(self, record: ImageRecord, ref: refs.Reference) -> list[dict[str, str]]:
        wanted = str(ref.with_digest(ref.digest or ""))
        record.repo_digests = [d for d in record.repo_digests if d != wanted]
        atomic.write_json(self._records / f"{hex_of(record.id)}.json", record.to_json())
        return [{"Untagged": ref.with_digest(ref.digest or "").familiar()}]

    def _check_removable(self, name, record, mine, users, by_id: bool, force: bool) -> None:
        running = [cid for cid, is_running in users if is_running]
        if running and (by_id or len(mine) <= 1):
            raise ImageConflict(
                f"conflict: unable to delete {record.short_id} (cannot be forced) - image is "
                f"being used by running container {running[0][:12]}; stop it first"
            )
        if force:
            return
        if users and (by_id or len(mine) <= 1):
            raise ImageConflict(
                f'conflict: unable to remove repository reference "{name}" (must force) - '
                f"container {users[0][0][:12]} is using its referenced image {record.short_id}"
            )
        if by_id and len(mine) > 1:
            raise ImageConflict(
                f"conflict: unable to delete {record.short_id} (must be forced) - image is "
                "referenced in multiple repositories"
            )

    def _untag_digests(self, record: ImageRecord) -> list[dict[str, str]]:
        return [{"Untagged": refs.parse(d).familiar()} for d in record.repo_digests]

    def _delete(self, record: ImageRecord) -> list[dict[str, str]]:
        """Remove the record and the untagged build parents nothing else needs (as dockerd
        does), then every layer and blob no other image uses."""
        deleted = []
        while record is not None:
            (self._records / f"{hex_of(record.id)}.json").unlink()
            deleted.append({"Deleted": record.id})
            record = self._unneeded_parent(record)
        atomic.fsync_dir(self._records)
        self._collect()
        return deleted

    def _has_children(self, record: ImageRecord) -> bool:
        records = filter(None, map(self._load, self._records.glob("*.json")))
        return any(r.parent == record.id for r in records)

    def _unneeded_parent(self, record: ImageRecord) -> ImageRecord | None:
        """`record`'s parent, if it is an intermediate image no tag, child or container uses."""
        if not record.parent:
            return None
        parent = self._load(self._records / f"{hex_of(record.parent)}.json")
        if parent is None or parent.id in self._tags().values():
            return None
        if self.containers_using(parent.id) or parent.repo_digests:
            return None
        return None if self._has_children(parent) else parent

    def collect_garbage(self, *, wait: bool = True) -> bool:
        """Make recent pulls durable, forget what a crash may have torn, and free layers and
        blobs no image refers to. False if a pull is running and `wait` is False, since its
        layers are not recorded yet."""
        with self.content.gc_lock(shared=False, wait=wait) as held:
            if not held:
                return False
            with self._index_lock():
                self._forget_torn()
                self._make_durable()
                self._collect()
            return True

    def _sync_layers(self, record: ImageRecord) -> None:
        """Flush the filesystem (the layers and blobs `record` names among them), then mark
        its layers durable and the record too (the caller writes it)."""
        atomic.syncfs(self.root)
        for diff_id in record.diff_ids:
            self.content.mark_layer_durable(diff_id)
        record.boot_id = ""

    def _forget_torn(self) -> None:
        """Records written in an earlier boot and never made durable may name torn layers:
        drop them (and their tags), so the image is absent rather than corrupt."""
        boot, tags = atomic.boot_id(), self._tags()
        for path in self._records.glob("*.json"):
            record = self._load(path)
            if record is not None and record.boot_id not in ("", boot):
                path.unlink()
                tags = {t: i for t, i in tags.items() if i != record.id}
        if tags != self._tags():
            self._write_tags(tags)

    def _make_durable(self) -> None:
        """Records this boot wrote before add() made them durable itself (an agent of an
        earlier version, upgraded in place): one syncfs for all, then mark them."""
        pending = [r for r in map(self._load, self._records.glob("*.json")) if r and r.boot_id]
        if not pending:
            return
        atomic.syncfs(self.root)
        for record in pending:
            for diff_id in record.diff_ids:
                self.content.mark_layer_durable(diff_id)
            record.boot_id = ""
            atomic.write_json(self._records / f"{hex_of(record.id)}.json", record.to_json())

    def _collect(self) -> None:
        """Call with the gc lock held exclusively."""
        records = [r for r in map(self._load, self._records.glob("*.json")) if r is not None]
        used_layers = {hex_of(d) for r in records for d in r.diff_ids}
        used_blobs = {hex_of(b) for r in records for b in _blobs_of(r)}
        for path in self.content.layers.iterdir():
            if path.name not in used_layers:
                self.content.remove_layer("sha256:" + path.name)
        for path in self.content.blobs.iterdir():
            if path.name not in used_blobs:
                path.unlink(missing_ok=True)
        self.content.clear_tmp()  # no pull is staging anything while we hold the gc lock


def _now() -> str:
    """RFC 3339 UTC with nanoseconds, as dockerd records LastTagTime."""
    ns = time.time_ns()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9))
    return f"{stamp}.{ns % 10**9:09d}Z"


def _blobs_of(record: ImageRecord) -> list[str]:
    index_digests = [d.rpartition("@")[2] for d in record.repo_digests]
    layer_blobs = [layer["digest"] for layer in record.layers]
    return [record.id, record.manifest_digest, *index_digests, *layer_blobs]
