"""What a container asks to have mounted, parsed and checked as dockerd does, in its words:
`HostConfig.Binds` (`src:dst[:mode]`), `HostConfig.Mounts`, `HostConfig.Tmpfs`,
`HostConfig.VolumesFrom` and the anonymous volumes of `Config.Volumes` and the image's
`VOLUME`. Pure: nothing is looked up or made here (resolve.py does that).

A Binds entry is turned into the Mounts shape first and checked by the same rules, as dockerd
does, so `-v` and `--mount` refuse the same things with the same words.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field, replace

from vmctl_agent.errors import InvalidMount
from vmctl_agent.runtime.mounts import PROPAGATIONS, TMPFS_DATA, TMPFS_DEFAULTS, parse_options

RW_MODES = ("rw", "ro")
LABEL_MODES = ("z", "Z")
COPY_MODES = ("nocopy",)
CONSISTENCY = ("consistent", "cached", "delegated", "default")
ALL_PROPAGATIONS = (*PROPAGATIONS, "shared", "rshared")
_MOUNT_FIELDS = ("Type", "Source", "Target", "ReadOnly", "Consistency", "BindOptions",
                 "VolumeOptions", "TmpfsOptions")  # fmt: skip
_BIND_OPTIONS = ("Propagation", "NonRecursive", "CreateMountpoint")
_VOLUME_OPTIONS = ("NoCopy", "Labels", "DriverConfig", "Subpath")
_TMPFS_OPTIONS = ("SizeBytes", "Mode", "Options")
_DRIVE = re.compile(r"[A-Za-z]:[\\/]")


@dataclass(frozen=True)
class Wanted:
    """One mount as asked for, checked, not yet resolved."""

    type: str  # bind, volume, tmpfs
    destination: str
    source: str = ""  # bind: a path in the VM; volume: its name ("" for a new anonymous one)
    read_only: bool = False
    propagation: str = ""
    non_recursive: bool = False
    create_source: bool = False
    mode: str = ""
    copy_up: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    driver: str = "local"
    driver_opts: dict[str, str] = field(default_factory=dict)
    tmpfs_options: str = ""
    listed: bool = True
    subpath: str = ""  # volume: a directory inside it, mounted instead of the whole


def check_destination(target: str) -> str:
    """Absolute, not `/`, and not /proc (the runtime's own): the cleaned path."""
    if not target:
        raise InvalidMount("field Target must not be empty")
    cleaned = posixpath.normpath(target)
    if cleaned == "/":
        raise InvalidMount("invalid specification: destination can't be '/'")
    if not posixpath.isabs(target):
        raise InvalidMount(f"invalid mount path: '{target}' mount path must be absolute")
    if cleaned == "/proc" or cleaned.startswith("/proc/"):
        raise InvalidMount(f"{cleaned} cannot be mounted because it is inside /proc")
    return cleaned


# -- Windows hosts ----------------------------------------------------------------------------


def windows_source(path: str) -> str:
    """`C:\\Users\\me\\src` (or `C:/Users/me/src`) as the VM shares it: `/c/Users/me/src`;
    any other path as it is."""
    if not _DRIVE.match(path):
        return path
    rest = path[2:].replace("\\", "/")
    return posixpath.normpath(f"/{path[0].lower()}{rest}")


def windows_bind(raw: str) -> str:
    """A Binds entry whose source is a Windows path, its source translated: the drive's colon
    is not the separator (`C:\\src:/dst:ro` is `/c/src:/dst:ro`)."""
    if not isinstance(raw, str) or not _DRIVE.match(raw):
        return raw
    end = raw.find(":", 2)
    source, rest = (raw, "") if end < 0 else (raw[:end], raw[end:])
    return windows_source(source) + rest


def windows_mount(spec: dict) -> dict:
    """A Mounts entry of type bind with its Windows Source translated."""
    if not isinstance(spec, dict) or spec.get("Type") != "bind":
        return spec
    source = spec.get("Source")
    return {**spec, "Source": windows_source(source)} if isinstance(source, str) else spec


# -- HostConfig.Mounts ------------------------------------------------------------------------


def from_mount(spec: dict) -> Wanted:
    """One `--mount` (HostConfig.Mounts entry); a field we do not honour is refused."""
    if not isinstance(spec, dict):
        raise InvalidMount("invalid mount config: expected an object")
    kind = spec.get("Type") or ""
    try:
        return _parse_mount(kind, spec)
    except InvalidMount as e:
        raise InvalidMount(f'invalid mount config for type "{kind}": {e}') from None


def _parse_mount(kind: str, spec: dict) -> Wanted:
    _refuse_unknown(spec, _MOUNT_FIELDS, "")
    destination = check_destination(spec.get("Target") or "")
    parse = {"bind": _bind, "volume": _volume, "tmpfs": _tmpfs}.get(kind)
    if parse is None:
        raise InvalidMount("mount type unknown")
    return parse(spec, destination)


def _bind(spec: dict, destination: str) -> Wanted:
    _extra(spec, "VolumeOptions", "TmpfsOptions")
    source = spec.get("Source") or ""
    if not source:
        raise InvalidMount("field Source must not be empty")
    if not posixpath.isabs(source):
        raise InvalidMount(f"invalid mount path: '{source}' mount path must be absolute")
    options = spec.get("BindOptions") or {}
    _refuse_unknown(options, _BIND_OPTIONS, "BindOptions.")
    propagation = options.get("Propagation") or ""
    _check_propagation(propagation)
    return Wanted(
        "bind", destination, posixpath.normpath(source), bool(spec.get("ReadOnly")),
        propagation or "rprivate", bool(options.get("NonRecursive")),
        bool(options.get("CreateMountpoint")), copy_up=False,
    )  # fmt: skip


def _volume(spec: dict, destination: str) -> Wanted:
    _extra(spec, "BindOptions", "TmpfsOptions")
    name, options = spec.get("Source") or "", spec.get("VolumeOptions") or {}
    _refuse_unknown(options, _VOLUME_OPTIONS, "VolumeOptions.")
    if spec.get("ReadOnly") and not name:
        raise InvalidMount("must not set ReadOnly mode when using anonymous volumes")
    subpath = _subpath(options.get("Subpath") or "", name)
    driver = options.get("DriverConfig") or {}
    return Wanted(
        "volume", destination, name, bool(spec.get("ReadOnly")),
        copy_up=not options.get("NoCopy") and not subpath,
        labels=dict(options.get("Labels") or {}), driver=driver.get("Name") or "local",
        driver_opts=dict(driver.get("Options") or {}), subpath=subpath,
    )  # fmt: skip


def _subpath(subpath: str, name: str) -> str:
    """VolumeOptions.Subpath: relative, inside the volume (symlinks are refused at start)."""
    if not subpath:
        return ""
    if not name:
        raise InvalidMount("must not set Subpath when using anonymous volumes")
    cleaned = posixpath.normpath(subpath)
    if posixpath.isabs(subpath) or cleaned == ".." or cleaned.startswith("../"):
        raise InvalidMount("subpath must be a relative path within the volume")
    return "" if cleaned == "." else cleaned


def _tmpfs(spec: dict, destination: str) -> Wanted:
    _extra(spec, "BindOptions", "VolumeOptions", "Source")
    options = spec.get("TmpfsOptions") or {}
    _refuse_unknown(options, _TMPFS_OPTIONS, "TmpfsOptions.")
    text = tmpfs_options(options, bool(spec.get("ReadOnly")))
    return Wanted("tmpfs", destination, read_only=bool(spec.get("ReadOnly")), tmpfs_options=text)


def tmpfs_options(options: dict, read_only: bool) -> str:
    """TmpfsOptions as dockerd turns them into `mount -o` text (size in the largest unit
    that divides it); its defaults first."""
    parts = [TMPFS_DEFAULTS] + (["ro"] if read_only else [])
    if options.get("Mode"):
        parts.append(f"mode={int(options['Mode']):o}")
    size = int(options.get("SizeBytes") or 0)
    if size < 0:
        raise InvalidMount(f"invalid tmpfs size: {size}")
    if size:
        parts.append(_size_text(size))
    for option in options.get("Options") or ():
        if not option or option[0] not in ("exec", "noexec") or len(option) > 2:
            raise InvalidMount(f"invalid option: {option[0] if option else option}")
        parts.append("=".join(option))
    return ",".join(parts)


def _size_text(size: int) -> str:
    for suffix, unit in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if size % unit == 0:
            return f"size={size // unit}{suffix}"
    return f"size={size}"


def _extra(spec: dict, *names: str) -> None:
    for name in names:
        if spec.get(name):
            raise InvalidMount(f"field {name} must not be specified")


def _refuse_unknown(spec: dict, known: tuple[str, ...], prefix: str) -> None:
    """A field this engine does not honour is refused by name, never dropped."""
    if not isinstance(spec, dict):
        raise InvalidMount(f"{prefix.rstrip('.') or 'mount'} must be an object")
    for key, value in spec.items():
        if key not in known and value not in (None, "", False, {}, []):
            raise InvalidMount(f"{prefix}{key} is not supported by this engine")


def _check_propagation(mode: str) -> None:
    if mode and mode not in ALL_PROPAGATIONS:
        raise InvalidMount(f"invalid propagation mode: {mode}")
    if mode in ("shared", "rshared"):
        raise InvalidMount(
            f"propagation {mode} is not supported by this engine (private, rprivate, slave "
            "and rslave are)"
        )


# -- HostConfig.Binds -------------------------------------------------------------------------


def from_bind(raw: str) -> Wanted:
    """`src:dst[:mode]`: an absolute src is a bind, anything else a volume's name."""
    parts = raw.split(":", 3) if isinstance(raw, str) else [""]
    if not parts[0] or len(parts) > 3 or (len(parts) == 2 and _valid_mode(parts[1])):
        raise InvalidMount(f"invalid volume specification: '{raw}'")
    if len(parts) == 1:
        parts = ["", parts[0]]
    source, target, mode = (*parts, "")[:3]
    if not _valid_mode(mode):
        raise InvalidMount(f"invalid mode: {mode}")
    try:
        return _bind_entry(source, target, mode)
    except InvalidMount as e:
        raise InvalidMount(f"invalid volume specification: '{raw}': {e}") from None


def _bind_entry(source: str, target: str, mode: str) -> Wanted:
    words = mode.split(",") if mode else []
    kind = "bind" if posixpath.isabs(source) else "volume"
    spec = {"Type": kind, "Source": source, "Target": target, "ReadOnly": "ro" in words}
    propagation = next((w for w in words if w in ALL_PROPAGATIONS), "")
    if propagation:
        spec["BindOptions"] = {"Propagation": propagation}
    if "nocopy" in words:
        spec["VolumeOptions"] = {"NoCopy": True}
    try:
        wanted = _parse_mount(kind, spec)
    except InvalidMount as e:
        raise InvalidMount(f'invalid mount config for type "{kind}": {e}') from None
    default = "z" if kind == "volume" and source and not mode else ""
    return replace(wanted, mode=mode or default)


def _valid_mode(mode: str) -> bool:
    """dockerd's: comma-separated, at most one of each kind."""
    if not mode:
        return True
    kinds = (RW_MODES, LABEL_MODES, ALL_PROPAGATIONS, COPY_MODES, CONSISTENCY)
    counts = [0] * len(kinds)
    for word in mode.split(","):
        found = [i for i, kind in enumerate(kinds) if word in kind]
        if not found:
            return False
        counts[found[0]] += 1
    return max(counts) <= 1


# -- HostConfig.Tmpfs, Config.Volumes, HostConfig.VolumesFrom ---------------------------------


def from_tmpfs(destination: str, options: str) -> Wanted:
    """`--tmpfs /run:size=64m,mode=1777`: flags and tmpfs's own options only."""
    cleaned = check_destination(destination)
    flags_text = f"{TMPFS_DEFAULTS},{options}" if options else TMPFS_DEFAULTS
    _, data = parse_options(flags_text)
    for option in filter(None, data.split(",")):
        if option.partition("=")[0] not in TMPFS_DATA:
            raise InvalidMount(f"invalid tmpfs option: {option!r} for {destination}")
    return Wanted("tmpfs", cleaned, tmpfs_options=flags_text, listed=False)


def from_volume(destination: str) -> Wanted:
    """An anonymous volume (`-v /data`, the image's VOLUME)."""
    try:
        return Wanted("volume", check_destination(destination), mode="")
    except InvalidMount as e:
        raise InvalidMount(f"invalid volume specification: '{destination}': {e}") from None


def volumes_from(spec: str) -> tuple[str, str]:
    """`container[:ro|rw]`: the container and the mode its mounts take here."""
    if not spec:
        raise InvalidMount("volumes-from specification cannot be an empty string")
    ref, _, mode = spec.partition(":")
    if mode and (not _valid_mode(mode) or any(w not in (*RW_MODES, *LABEL_MODES)
                                              for w in mode.split(","))):  # fmt: skip
        raise InvalidMount(f"invalid mode: {mode}")
    return ref, mode or "rw"
