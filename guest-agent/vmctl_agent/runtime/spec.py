"""What a container runs, merged from the image's config and `docker run`'s options, as Docker
merges them. Pure functions: everything here is decided before any process exists.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from vmctl_agent.errors import AgentError
from vmctl_agent.runtime import capabilities
from vmctl_agent.runtime.mounts import Mount

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENV_NAME = re.compile(r"[^=\0]+")


class InvalidSpec(AgentError):
    """A container cannot be made from these options (Docker answers 400/500 with the text)."""


@dataclass(frozen=True)
class CreateOptions:
    """The parts of `docker run` / POST /containers/create the runtime understands."""

    image: str
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    auto_remove: bool = False
    memory: int = 0
    nano_cpus: int = 0
    pids_limit: int | None = None
    network: str = "none"
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    no_new_privileges: bool = False
    name: str = ""
    mounts: tuple[Mount, ...] = ()  # resolved by the volumes room, mounted in this order
    mount_request: dict = field(default_factory=dict)  # Binds, Mounts, Tmpfs, VolumesFrom and
    # Config.Volumes as the client sent them: inspect shows them back
    restart_policy: str = "no"
    restart_retries: int = 0
    healthcheck: dict | None = None  # Docker's Healthcheck: Test, Interval... (ns)
    stop_signal: str = ""  # the image's (or SIGTERM) when empty
    stop_timeout: int | None = None  # seconds `docker stop` waits when not told; None: 10
    isolation: str = ""  # "" or "default": Linux has no other
    group_add: tuple[str, ...] = ()  # more groups, by name or id, for every process
    cpu_shares: int = 0  # relative CPU weight (v1 cpu.shares, v2 cpu.weight); 0: default
    shm_size: int = 0  # /dev/shm's size in bytes; 0: Docker's 64 MiB
    # What the network room reads (the runtime only passes them on):
    endpoints: dict = field(default_factory=dict)  # network → {"Aliases", "IPv4Address"}
    mac_address: str = ""
    extra_hosts: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    port_bindings: dict = field(default_factory=dict)  # "80/tcp" → [{"HostIp", "HostPort"}]
    publish_all: bool = False
    exposed_ports: tuple[str, ...] = ()  # the image's and the request's, "80/tcp"
    # How the container is isolated (hostflags.py in the API reads them from HostConfig):
    init: bool = False  # docker-init (tini) as PID 1
    read_only: bool = False  # the root filesystem mounted read-only
    ulimits: tuple[tuple[str, int, int], ...] = ()  # (name, soft, hard), ulimits.py
    sysctls: dict[str, str] = field(default_factory=dict)
    pid_mode: str = ""  # "" (its own) or "host"
    uts_mode: str = ""  # "" (its own) or "host"
    ipc_mode: str = ""  # "", "private", "shareable", "none" (its own), "host", "container:ID"
    cgroupns_mode: str = ""  # "private" or "host"; "": the engine's default
    privileged: bool = False  # all capabilities and host devices, nothing masked
    devices: tuple[tuple[str, str, str], ...] = ()  # (host, container, permissions)
    runtime: str = ""  # "runc" or "vmctl" (the same one), as asked
    memory_swap: int = 0  # memory + swap in bytes; 0: twice memory; -1: unlimited
    memory_swappiness: int | None = None
    oom_kill_disable: bool = False
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    log_driver: str = "json-file"  # or "none" (logconfig.py)
    log_options: dict[str, str] = field(default_factory=dict)  # max-size, max-file
    console_size: tuple[int, ...] = ()  # a terminal's first (rows, columns)
    # Fields dockerd only records and shows back ({"Config": {...}, "HostConfig": {...}}):
    recorded: dict = field(default_factory=dict)


TUPLE_OPTIONS = (
    "env", "cap_add", "cap_drop", "group_add", "extra_hosts", "dns", "dns_search", "dns_options",
    "exposed_ports", "ulimits", "devices", "console_size",
)  # fmt: skip


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    home: str = "/"


@dataclass(frozen=True)
class ProcessSpec:
    """One process to start in a container: the first one, or one run by `exec`."""

    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: User
    tty: bool = False
    capabilities: tuple[str, ...] = capabilities.DOCKER_DEFAULT
    no_new_privileges: bool = False


def command(image_config: dict, options: CreateOptions) -> tuple[str, ...]:
    """Entrypoint + Cmd; a new entrypoint drops the image's Cmd, as in Docker."""
    entrypoint = options.entrypoint
    if entrypoint is None:
        entrypoint = tuple(image_config.get("Entrypoint") or ())
    cmd = options.cmd
    if cmd is None:
        cmd = () if options.entrypoint is not None else tuple(image_config.get("Cmd") or ())
    args = tuple(a for a in (*entrypoint, *cmd))
    if not args or args == ("",):
        raise InvalidSpec("No command specified")
    return args


def config_env(image_env: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    """`Config.Env` as dockerd keeps it: ours as given (a bare `NAME` too: "unset"), then
    the image's entries we did not name."""
    ours = {entry.partition("=")[0] for entry in extra}
    return (*extra, *(e for e in image_env if e.partition("=")[0] not in ours))


def environment(image_env: Sequence[str], extra: Sequence[str], hostname: str, home: str):
    """The image's env with ours on top (a bare `NAME` unsets it); PATH, HOSTNAME and HOME
    as Docker sets them."""
    merged: dict[str, str] = {}
    for entry in (*image_env, *extra):
        name, sep, value = entry.partition("=")
        if not _ENV_NAME.fullmatch(name):
            raise InvalidSpec(f"invalid environment variable: {entry!r}")
        if sep:
            merged[name] = value
        else:
            merged.pop(name, None)
    merged.setdefault("PATH", DEFAULT_PATH.partition("=")[2])
    merged = {"HOSTNAME": hostname, **merged}
    merged.setdefault("HOME", home)
    return tuple(f"{k}={v}" for k, v in merged.items())


def working_dir(image_config: dict, options: CreateOptions) -> str:
    cwd = options.working_dir or image_config.get("WorkingDir") or "/"
    if not cwd.startswith("/"):
        raise InvalidSpec(f"the working directory '{cwd}' is invalid, it needs to be absolute")
    return posixpath.normpath(cwd)


# -- users, from the image's own /etc/passwd and /etc/group -------------------------------------


def resolve_user(spec: str, layers: Sequence[str], group_add: Sequence[str] = ()) -> User:
    """`name`, `uid`, `name:group`, `uid:gid`, looked up in the image as Docker does, with
    the groups of `group_add` (names or ids, as --group-add) besides its own."""
    name, _, group = (spec or "0").partition(":")
    passwd = _entries(read_image_file(layers, "etc/passwd"))
    groups = _entries(read_image_file(layers, "etc/group"))
    entry = _find(passwd, name)
    if entry is None and not name.isdigit():
        raise InvalidSpec(f"unable to find user {name}: no matching entries in passwd file")
    uid = int(entry[2]) if entry else int(name)
    gid = int(entry[3]) if entry and len(entry) > 3 and entry[3].isdigit() else 0
    home = entry[5] if entry and len(entry) > 5 and entry[5] else "/"
    if group:
        gid = _group_id(group, groups)
    username = entry[0] if entry else None
    extra = tuple(int(g[2]) for g in groups if username and username in _members(g))
    added = tuple(_group_id(g, groups) for g in group_add)
    return User(uid, gid, tuple(sorted({gid, *extra, *added})), home)


def _group_id(group: str, groups: list[list[str]]) -> int:
    entry = _find(groups, group)
    if entry is not None:
        return int(entry[2])
    if group.isdigit():
        return int(group)
    raise InvalidSpec(f"unable to find group {group}: no matching entries in group file")


def _entries(data: bytes | None) -> list[list[str]]:
    if not data:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    rows = [line.split(":") for line in lines if line and not line.startswith("#")]
    return [r for r in rows if len(r) >= 3 and r[2].isdigit()]


def _find(rows: list[list[str]], key: str) -> list[str] | None:
    for row in rows:
        if row[0] == key:
            return row
    for row in rows:
        if key.isdigit() and row[2] == key:
            return row
    return None


def _members(group_row: list[str]) -> list[str]:
    return group_row[3].split(",") if len(group_row) > 3 and group_row[3] else []


def read_image_file(layers: Sequence[str], relative: str, limit: int = 1 << 20) -> bytes | None:
    """A regular file as the merged image shows it: top layer first, whiteouts and opaque
    directories honoured, symlinks not followed (a passwd that is a symlink counts as absent)."""
    parts = relative.split("/")
    for layer in layers:
        found = _in_layer(layer, parts)
        if found == "stop":
            return None
        if found is not None:
            with open(found, "rb") as f:
                return f.read(limit)
    return None


def _in_layer(layer: str, parts: list[str]) -> str | None:
    """The file's path in this layer, "stop" if this layer hides it below, None to look on."""
    path, hidden_below = layer, False
    for i, part in enumerate(parts):
        hidden_below = hidden_below or _opaque(path)
        path = os.path.join(path, part)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return "stop" if hidden_below else None
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
            return "stop"  # a whiteout: deleted from here down
        if i == len(parts) - 1:
            return path if stat.S_ISREG(info.st_mode) else "stop"
        if not stat.S_ISDIR(info.st_mode):
            return "stop"
    return None


def _opaque(directory: str) -> bool:
    try:
        return os.getxattr(directory, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False
