"""Volumes on disk: one directory per volume, published whole or not at all.

    <data-root>/volumes/<name>/volume.json   the record (name, driver, labels, options, time)
    <data-root>/volumes/<name>/_data/        the Mountpoint: what containers see
    <data-root>/volumes/.new-<name>-<rand>/  a create in progress (a crash leaves it: swept)
    <data-root>/volumes/.lock                held while volumes are made, used or removed

A create writes the record durably in a staging directory and renames it into place, so a
volume exists entirely or not at all, whenever the agent or the VM dies; the next agent
sweeps what a dead one left (it holds the lock, so no live create is in flight).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vmctl_agent import atomic
from vmctl_agent.errors import InvalidMount, VolumeConflict, VolumeNotFound
from vmctl_agent.store.content import remove_tree, tree_size
from vmctl_agent.volumes import local

ANONYMOUS = "com.docker.volume.anonymous"  # the label dockerd gives a container's own volumes
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
STAGING = ".new-"
REMOVING = ".removing-"


@dataclass(frozen=True)
class Volume:
    name: str
    directory: Path
    driver: str = local.DRIVER
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] | None = None
    created_at: str = ""
    auto_remove: bool = False  # anonymous, of a `--rm` container: goes with it

    @property
    def mountpoint(self) -> str:
        return str(self.directory / "_data")

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS in self.labels

    def to_json(self) -> dict:
        return {
            "Name": self.name,
            "Driver": self.driver,
            "Labels": self.labels,
            "Options": self.options,
            "CreatedAt": self.created_at,
            "AutoRemove": self.auto_remove,
        }

    def inspect(self) -> dict:
        """`docker volume inspect`'s shape."""
        return {
            "CreatedAt": self.created_at,
            "Driver": self.driver,
            "Labels": self.labels,
            "Mountpoint": self.mountpoint,
            "Name": self.name,
            "Options": self.options,
            "Scope": "local",
        }

    def size(self) -> int:
        return tree_size(Path(self.mountpoint))


class VolumeStore:
    """The volumes under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o701)  # containers' users reach _data through it, nobody lists it
        with self.locked():
            self._sweep()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Volumes made, used or removed one caller at a time (threads and processes)."""
        with atomic.locked(self.root / ".lock"):
            yield

    def _sweep(self) -> None:
        for path in self.root.iterdir():
            if path.name.startswith((STAGING, REMOVING)):
                remove_tree(path)

    # -- reading --------------------------------------------------------------------------

    def get(self, name: str) -> Volume:
        if NAME.fullmatch(name):
            try:
                return _load(self.root / name)
            except (FileNotFoundError, ValueError, TypeError, KeyError):
                pass
        raise VolumeNotFound(f"get {name}: no such volume")

    def list(self) -> list[Volume]:
        found = []
        for path in sorted(self.root.iterdir()):
            if NAME.fullmatch(path.name):
                try:
                    found.append(_load(path))
                except (FileNotFoundError, ValueError, TypeError, KeyError):
                    continue  # removed meanwhile
        return found

    # -- create and remove (the caller holds the lock) ------------------------------------

    def create(
        self,
        name: str = "",
        *,
        driver: str = local.DRIVER,
        options: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        auto_remove: bool = False,
    ) -> tuple[Volume, bool]:
        """The volume, made unless it exists; and whether this call made it. One made
        without a name is anonymous (dockerd's label says so, and prune takes it)."""
        if not name:
            name, labels = secrets.token_hex(32), {**(labels or {}), ANONYMOUS: ""}
        _check(name, driver, options)
        try:
            existing = self.get(name)
        except VolumeNotFound:
            existing = None
        if existing is not None:
            return _same_driver(existing, driver), False
        volume = Volume(
            name, self.root / name, driver, dict(labels or {}), options or None,
            _now(), auto_remove,
        )  # fmt: skip
        self._publish(volume)
        return volume, True

    def _publish(self, volume: Volume) -> None:
        staging = self.root / f"{STAGING}{volume.name}-{secrets.token_hex(4)}"
        try:
            staging.mkdir(mode=0o701)
            (staging / "_data").mkdir(mode=0o755)
            atomic.write_new_json(staging / "volume.json", volume.to_json())
            staging.rename(volume.directory)
            atomic.fsync_dir(self.root)
        except BaseException:
            remove_tree(staging)
            raise

    def remove(self, volume: Volume) -> None:
        """Unpublish (a rename) and delete; a device mounted by options is unmounted first,
        and nothing is deleted while anything is still mounted there (a bound directory is
        the user's own)."""
        if local.needs_mount(volume.options):
            local.unmount(volume.mountpoint)
        if local.mounted_below(str(volume.directory)):
            raise VolumeConflict(f"remove {volume.name}: something is still mounted on it")
        doomed = self.root / f"{REMOVING}{volume.name}"
        os.rename(volume.directory, doomed)
        atomic.fsync_dir(self.root)
        remove_tree(doomed)


def _check(name: str, driver: str, options: dict[str, str] | None) -> None:
    if driver != local.DRIVER:
        raise VolumeNotFound(
            f'create {name}: error looking up volume plugin {driver}: plugin "{driver}" not found'
        )
    if not NAME.fullmatch(name):
        raise InvalidMount(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path"
        )
    try:
        local.check(options or {})
    except InvalidMount as e:
        raise InvalidMount(f"create {name}: {e}") from None


def _same_driver(volume: Volume, driver: str) -> Volume:
    if volume.driver != driver:
        raise VolumeConflict(
            f"create {volume.name}: volume name must be unique: a volume with this name "
            f"exists with driver {volume.driver}"
        )
    return volume


def _load(directory: Path) -> Volume:
    data = atomic.read_json(directory / "volume.json")
    return Volume(
        name=data["Name"],
        directory=directory,
        driver=data["Driver"],
        labels=dict(data.get("Labels") or {}),
        options=data.get("Options") or None,
        created_at=data["CreatedAt"],
        auto_remove=bool(data.get("AutoRemove")),
    )


def _now() -> str:
    """RFC 3339 in UTC, to the second, as dockerd writes CreatedAt."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
