"""Volumes beside the containers that use them: a container's mounts resolved and the
container made under the store's lock (so no volume is removed between the two), and the
rules that follow use: a volume in use is never removed (409), an anonymous volume of a
`--rm` container goes with it, `docker rm -v` takes the container's anonymous volumes.

In use means named by any container's mounts, whatever its state, as in dockerd: what was
made for a container stays until that container is removed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from vmctl_agent.errors import VolumeConflict, VolumeNotFound
from vmctl_agent.runtime.containers import Runtime
from vmctl_agent.runtime.index import Container
from vmctl_agent.runtime.mounts import Mount
from vmctl_agent.runtime.spec import CreateOptions
from vmctl_agent.volumes import local
from vmctl_agent.volumes.resolve import Asked, Resolver
from vmctl_agent.volumes.store import Volume, VolumeStore


class Volumes:
    """The volume store and the runtime, together."""

    def __init__(self, store: VolumeStore, runtime: Runtime, shared: tuple[str, ...] = ()):
        """`shared`: the host's folders in the VM; given, binds of other paths are refused."""
        self.store = store
        self.runtime = runtime
        self.shared = shared

    # -- containers -------------------------------------------------------------------------

    def create_container(
        self, options: CreateOptions, request: Asked
    ) -> tuple[Container, list[Volume]]:
        """runtime.create with the mounts resolved, and the volumes this made (removed again
        if the create fails). A container without mounts takes no lock."""
        image = self.runtime.images.get(options.image)
        image_volumes = tuple((image.config.get("config") or {}).get("Volumes") or {})
        if request.empty and not image_volumes:
            return self.runtime.create(replace(options, mount_request=request.echo)), []
        with self.store.locked():
            resolver = Resolver(self.store, self._mounts_of, options.auto_remove, self.shared)
            try:
                mounts = resolver.resolve(request, image_volumes)
                made = replace(options, mounts=mounts, mount_request=request.echo)
                return self.runtime.create(made), resolver.made
            except BaseException:
                for volume in resolver.made:
                    self.store.remove(volume)
                raise

    def _mounts_of(self, ref: str) -> tuple[Mount, ...]:
        mounts = self.runtime.get(ref).config.create_options.mounts
        return tuple(m for m in mounts if m.listed)

    def prepare_start(self, container: Container) -> None:
        """Mount the devices of the container's volumes that have options (local.py)."""
        names = [m.name for m in container.config.create_options.mounts if m.type == "volume"]
        if not names:
            return
        with self.store.locked():
            for name in names:
                volume = self.store.get(name)
                if local.needs_mount(volume.options):
                    local.mount(volume.options, volume.mountpoint)

    def removed_container(self, container: Container, *, volumes: bool) -> None:
        """After a container's removal: its anonymous volumes too with `docker rm -v`."""
        if not volumes:
            return
        with self.store.locked():
            used = self.use_counts()
            for m in container.config.create_options.mounts:
                if m.type == "volume" and not used[m.name]:
                    self._remove_if_anonymous(m.name)

    def _remove_if_anonymous(self, name: str) -> None:
        try:
            volume = self.store.get(name)
        except VolumeNotFound:
            return
        if volume.anonymous:
            self.store.remove(volume)

    # -- volumes ----------------------------------------------------------------------------

    def use_counts(self) -> Counter[str]:
        """How many containers name each volume."""
        return Counter(
            m.name
            for config in self.runtime.configs()
            for m in config.create_options.mounts
            if m.type == "volume"
        )

    def users(self, name: str) -> list[str]:
        return [
            config.id
            for config in self.runtime.configs()
            if any(m.name == name for m in config.create_options.mounts if m.type == "volume")
        ]

    def create(self, name: str, driver: str, options: dict, labels: dict) -> Volume:
        with self.store.locked():
            volume, _ = self.store.create(name, driver=driver, options=options, labels=labels)
        return volume

    def list(self) -> list[Volume]:
        """Every volume, once the anonymous volumes of removed `--rm` containers are gone."""
        self.reap()
        return self.store.list()

    def get(self, name: str) -> Volume:
        self.reap()
        return self.store.get(name)

    def remove(self, name: str, *, force: bool = False) -> bool:
        """409 while any container names it, forced or not; a missing one is fine if forced.
        Whether there was one to remove."""
        with self.store.locked():
            try:
                volume = self.store.get(name)
            except VolumeNotFound:
                if force:
                    return False
                raise
            users = self.users(volume.name)
            if users:
                raise VolumeConflict(f"remove {name}: volume is in use - [{', '.join(users)}]")
            self.store.remove(volume)
        return True

    def prune(self, wanted) -> tuple[list[str], int]:
        """Remove the unused volumes `wanted(volume)` picks; their names and bytes freed."""
        deleted, reclaimed = [], 0
        with self.store.locked():
            used = self.use_counts()
            for volume in self.store.list():
                if not used[volume.name] and wanted(volume):
                    reclaimed += volume.size()
                    self.store.remove(volume)
                    deleted.append(volume.name)
        return deleted, reclaimed

    def reap(self) -> None:
        """The anonymous volumes of `--rm` containers that are gone (their shim removed them,
        perhaps while no agent ran)."""
        if not any(v.auto_remove for v in self.store.list()):
            return
        with self.store.locked():
            used = self.use_counts()
            for volume in self.store.list():
                if volume.auto_remove and not used[volume.name]:
                    self.store.remove(volume)
