"""What a container asked for, turned into the runtime's mounts, as dockerd registers them:
`--volumes-from` first, then Binds, Mounts and Tmpfs (which replace an inherited mount at the
same place, and may not repeat one another), then the anonymous volumes of `Config.Volumes`
and the image's VOLUME wherever nothing is mounted yet; a parent before what goes inside it.
Volumes named but missing are made here (the caller holds the store's lock and removes them
again if the create fails).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from vmctl_agent.errors import InvalidMount
from vmctl_agent.runtime.mounts import Mount
from vmctl_agent.volumes import specs
from vmctl_agent.volumes.store import Volume, VolumeStore

KNOWN_IN_VM = ("/var/run/docker.sock", "/run/docker.sock")  # binds Docker Desktop allows too


@dataclass(frozen=True)
class Asked:
    """A create's mount fields, parsed (specs.py) but not yet resolved."""

    wanted: tuple[specs.Wanted, ...] = ()  # Binds, Mounts and Tmpfs
    volumes_from: tuple[tuple[str, str], ...] = ()  # (container, mode)
    anonymous: tuple[str, ...] = ()  # Config.Volumes' destinations
    echo: dict = field(default_factory=dict)  # the fields as sent, for inspect

    @property
    def empty(self) -> bool:
        return not (self.wanted or self.volumes_from or self.anonymous)


def asked(host: dict, config_volumes: dict | None, *, windows: bool = False) -> Asked:
    """HostConfig's Binds, Mounts, Tmpfs and VolumesFrom and Config.Volumes, checked;
    `windows`: the host is Windows, and its paths in binds are translated to the VM's."""
    sent_binds, sent_mounts = host.get("Binds") or [], host.get("Mounts") or []
    binds, mounts = sent_binds, sent_mounts
    if windows:
        binds = [specs.windows_bind(b) for b in binds]
        mounts = [specs.windows_mount(m) for m in mounts]
    tmpfs, inherited = host.get("Tmpfs") or {}, host.get("VolumesFrom") or []
    # With --volume-driver, the docker CLI sends `-v name:/path` in Config.Volumes.
    named = [v for v in config_volumes or {} if ":" in v]
    driver = host.get("VolumeDriver") or "local"  # for the volumes Binds name
    wanted = [_driven(specs.from_bind(b), driver) for b in (*binds, *named)]
    wanted += [specs.from_mount(m) for m in mounts]
    wanted += [specs.from_tmpfs(dst, opts or "") for dst, opts in tmpfs.items()]
    _no_duplicates(w.destination for w in wanted)
    places = (v for v in config_volumes or {} if ":" not in v)
    anonymous = tuple(specs.from_volume(d).destination for d in places)
    echo = {"Binds": sent_binds or None, "Mounts": sent_mounts or None, "Tmpfs": tmpfs or None}
    echo |= {"VolumesFrom": inherited or None, "Volumes": config_volumes or None}
    from_ = tuple(specs.volumes_from(v) for v in inherited)
    return Asked(tuple(wanted), from_, anonymous, echo)


def _driven(wanted: specs.Wanted, driver: str) -> specs.Wanted:
    return replace(wanted, driver=driver) if wanted.type == "volume" else wanted


def _no_duplicates(destinations: Iterable[str]) -> None:
    seen: set[str] = set()
    for destination in destinations:
        if destination in seen:
            raise InvalidMount(f"Duplicate mount point: {destination}")
        seen.add(destination)


@dataclass
class Resolver:
    """Resolves one create's mounts; `made` lists the volumes it created."""

    store: VolumeStore
    mounts_of: Callable[[str], tuple[Mount, ...]]  # a container's mounts (--volumes-from)
    auto_remove: bool = False
    shared: tuple[str, ...] = ()  # the host's folders in the VM; none: any path may be bound
    made: list[Volume] = field(default_factory=list)

    def resolve(self, request: Asked, image_volumes: Iterable[str]) -> tuple[Mount, ...]:
        by_place: dict[str, Mount] = {}
        for ref, mode in request.volumes_from:
            for m in self.mounts_of(ref):
                by_place[m.destination] = _inherited(m, mode)
        for wanted in request.wanted:
            by_place[wanted.destination] = self._mount(wanted)
        for destination in (*request.anonymous, *_cleaned(image_volumes)):
            if destination not in by_place:
                by_place[destination] = self._mount(specs.Wanted("volume", destination))
        return tuple(sorted(by_place.values(), key=_depth))

    def _mount(self, wanted: specs.Wanted) -> Mount:
        if wanted.type == "tmpfs":
            return Mount("tmpfs", wanted.destination, read_only=wanted.read_only,
                         options=wanted.tmpfs_options, listed=wanted.listed)  # fmt: skip
        if wanted.type == "bind":
            if self.shared:
                _check_shared(wanted.source, self.shared)
            return _bind(wanted)
        volume = self._volume(wanted)
        return Mount(
            "volume", wanted.destination, volume.mountpoint, wanted.read_only,
            name=volume.name, driver=volume.driver, mode=wanted.mode, copy_up=wanted.copy_up,
            subpath=wanted.subpath,
        )  # fmt: skip

    def _volume(self, wanted: specs.Wanted) -> Volume:
        volume, made = self.store.create(
            wanted.source,
            driver=wanted.driver,
            options=wanted.driver_opts or None,
            labels=wanted.labels,
            auto_remove=self.auto_remove and not wanted.source,
        )
        if made:
            self.made.append(volume)
        return volume


def _bind(wanted: specs.Wanted) -> Mount:
    """A bind of a path that exists in the VM: a missing one is refused (made only when
    asked by CreateMountpoint), never an empty directory made where the user's was meant."""
    if not os.path.lexists(wanted.source):
        if not wanted.create_source:
            raise InvalidMount(
                'invalid mount config for type "bind": bind source path does not exist: '
                f"{wanted.source}"
            )
        os.makedirs(wanted.source, mode=0o755, exist_ok=True)
    return Mount(
        "bind", wanted.destination, wanted.source, wanted.read_only, wanted.propagation,
        mode=wanted.mode, recursive=not wanted.non_recursive,
    )  # fmt: skip


def _check_shared(source: str, shared: tuple[str, ...]) -> None:
    """Docker Desktop's answer to a bind of a folder the host does not share: never an empty
    directory made in the VM where the user meant their own."""
    if source in KNOWN_IN_VM or any(_inside(source, folder) for folder in shared):
        return
    raise InvalidMount(
        f"mounts denied: the path {source} is not shared from the host and is not known to "
        f"vmctl: share it (or a folder above it) with `vmctl config --mount {source}`"
    )


def _inside(path: str, folder: str) -> bool:
    return folder == "/" or path == folder or path.startswith(folder + "/")


def _inherited(m: Mount, mode: str) -> Mount:
    """A mount of another container's, as `--volumes-from c:ro` takes it: never copied up."""
    return replace(m, read_only=m.read_only or "ro" in mode.split(","), copy_up=False)


def _cleaned(destinations: Iterable[str]) -> list[str]:
    return [specs.from_volume(d).destination for d in destinations]


def _depth(m: Mount) -> int:
    """Parents first (sorted is stable: otherwise in the order asked)."""
    return m.destination.rstrip("/").count("/")
