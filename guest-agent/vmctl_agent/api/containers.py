"""/containers: create, inspect, start, stop, kill, restart, wait, remove, logs, attach,
resize, top and stats, with dockerd's status codes and body shapes (the list is listing.py)."""

from __future__ import annotations

import functools
import json
import os
import signal as signals
import time

from vmctl_agent.api import (
    events,
    hostflags,
    images,
    inspection,
    networking,
    streams,
    supervision,
    unsupported,
)
from vmctl_agent.api.http import ApiError, Response, empty, json_response
from vmctl_agent.api.http import client_alive as _client_alive
from vmctl_agent.errors import ImageNotFound
from vmctl_agent.runtime import logs as logfile
from vmctl_agent.runtime.index import Container, ContainerNotFound
from vmctl_agent.runtime.spec import CreateOptions
from vmctl_agent.store.content import tree_size
from vmctl_agent.volumes import resolve

_POLL = 0.05


# -- create ------------------------------------------------------------------------------------


def create(engine, request) -> Response:
    body = request.json()
    try:
        unsupported.check_create(body)
        options, warnings = _options(engine, body, request.arg("name"))
        host, windows = body.get("HostConfig") or {}, engine.config.windows_paths
        mounts = resolve.asked(host, body.get("Volumes"), windows=windows)
    except (TypeError, ValueError, AttributeError) as e:
        raise ApiError(400, f"invalid container configuration: {e}") from None
    _check_platform(engine, options.image, request.arg("platform"))
    container, made = engine.volumes.create_container(options, mounts)
    for volume in made:
        engine.events.publish("volume", "create", volume.name, driver=volume.driver)
    events.container_event(engine, "create", container.id, container)
    return json_response({"Id": container.id, "Warnings": warnings}, 201)


def _options(engine, body: dict, name: str) -> tuple[CreateOptions, list[str]]:
    host = body.get("HostConfig") or {}
    if not body.get("Image"):
        raise ApiError(400, "Config.Image is required")
    network = networking.create_options(engine, body, host)
    warnings = []
    if any(host.get("PortBindings") or {}) or host.get("PublishAllPorts"):
        warning = networking.ports_warning(network["network"])
        warnings += [warning] if warning else []
    security = host.get("SecurityOpt") or []
    flags, more = hostflags.create_options(body, host, engine.runtime.cgroups.version)
    restart = host.get("RestartPolicy") or {}
    options = CreateOptions(
        image=body["Image"],
        cmd=_strings(body.get("Cmd")),
        entrypoint=_strings(body.get("Entrypoint")),
        env=tuple(body.get("Env") or ()),
        working_dir=body.get("WorkingDir") or "",
        user=body.get("User") or "",
        hostname=body.get("Hostname") or "",
        labels=dict(body.get("Labels") or {}),
        tty=bool(body.get("Tty")),
        open_stdin=bool(body.get("OpenStdin")),
        stdin_once=bool(body.get("StdinOnce")),
        auto_remove=bool(host.get("AutoRemove")),
        memory=int(host.get("Memory") or 0),
        nano_cpus=int(host.get("NanoCpus") or 0),
        cpu_shares=int(host.get("CpuShares") or 0),
        pids_limit=host.get("PidsLimit"),
        **network,
        cap_add=tuple(host.get("CapAdd") or ()),
        cap_drop=tuple(host.get("CapDrop") or ()),
        no_new_privileges=any(s.startswith("no-new-privileges") for s in security),
        name=name,
        restart_policy=restart.get("Name") or "no",
        restart_retries=int(restart.get("MaximumRetryCount") or 0) if restart.get("Name") else 0,
        healthcheck=_object(body.get("Healthcheck"), "Healthcheck"),
        stop_signal=str(body.get("StopSignal") or ""),
        stop_timeout=None if body.get("StopTimeout") is None else int(body["StopTimeout"]),
        isolation=host.get("Isolation") or "",
        group_add=tuple(str(g) for g in host.get("GroupAdd") or ()),
        **flags,
    )
    return options, warnings + more


def _check_platform(engine, name: str, wanted: str) -> None:
    """`docker run --platform`: the local image must be that platform (the CLI then pulls)."""
    platform = images.requested_platform(wanted)
    if platform is None:
        return
    info = engine.images.get(name).inspect()
    actual = f"{info['Os']}/{info['Architecture']}"
    if actual != f"{platform.os}/{platform.architecture}":
        raise ImageNotFound(
            f"image with reference {name} was found but does not match the specified "
            f"platform: wanted {platform}, actual: {actual}"
        )


def _cgroupns(engine) -> str:
    """The cgroup namespace mode containers get: their own on cgroup v2, the host's on v1."""
    return "private" if engine.runtime.cgroups.version == 2 else "host"


def _object(value, field: str) -> dict | None:
    if value is not None and not isinstance(value, dict):
        raise ApiError(400, f"{field} must be a JSON object")
    return value or None


def _strings(value) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "Cmd and Entrypoint must be lists of strings")
    return tuple(value)


# -- reading -----------------------------------------------------------------------------------


def inspect(engine, request, id: str) -> Response:
    c = engine.runtime.get(id)
    info = c.inspect()
    info["NetworkSettings"] = networking.settings(engine, c)
    info["ResolvConfPath"] = str(c.directory / "resolv.conf")
    info["HostnamePath"] = str(c.directory / "hostname")
    info["HostsPath"] = str(c.directory / "hosts")
    info["ExecIDs"] = [e.id for e in engine.execs.values() if e.container_id == c.id] or None
    info["HostConfig"]["CgroupnsMode"] = info["HostConfig"].get("CgroupnsMode") or _cgroupns(engine)
    info["HostConfig"]["PidsLimit"] = info["HostConfig"].get("PidsLimit") or None  # 0: none
    if request.flag("size"):
        info.update(disk_sizes(engine, c))
    return json_response(inspection.complete(info, inspection.CONTAINER))


def disk_sizes(engine, container: Container) -> dict[str, int]:
    """SizeRw (what the container wrote) and SizeRootFs (that and its image), for size=1."""
    written = tree_size(container.directory / "upper")
    image_id = container.config.image_id
    image = engine.images.get(image_id).record.size if engine.images.exists(image_id) else 0
    return {"SizeRw": written, "SizeRootFs": written + image}


# -- lifecycle ---------------------------------------------------------------------------------


def start(engine, request, id: str) -> Response:
    if request.json():  # a HostConfig given at start would otherwise be dropped unseen
        raise ApiError(
            400,
            "starting container with non-empty request body was deprecated since API v1.22 "
            "and removed in v1.24",
        )
    found = engine.runtime.get(id)
    if found.state.running or found.restarting:
        return empty(304)
    engine.volumes.prepare_start(found)
    container = engine.runtime.start(id)
    events.volume_events(engine, "mount", container)
    events.container_event(engine, "start", container.id, container)
    supervision.watch(engine, container)
    return empty(204)


def stop(engine, request, id: str) -> Response:
    sig = _signal(request.arg("signal")) if request.arg("signal") else None
    current = engine.runtime.get(id)
    if not (current.state.running or current.restarting):
        engine.runtime.stop(id)  # nothing to signal, but a restart policy must hold it down
        return empty(304)
    container = engine.runtime.stop(id, timeout=request.int_arg("t"), sig=sig)
    events.container_event(engine, "stop", container.id)
    return empty(204)


def restart(engine, request, id: str) -> Response:
    sig = _signal(request.arg("signal")) if request.arg("signal") else None
    engine.volumes.prepare_start(engine.runtime.get(id))
    container = engine.runtime.restart(id, timeout=request.int_arg("t"), sig=sig)
    events.volume_events(engine, "mount", container)
    events.container_event(engine, "restart", container.id)
    supervision.watch(engine, container)
    return empty(204)


def kill(engine, request, id: str) -> Response:
    """204 once the signal is delivered; for SIGKILL once the exit is recorded too (its
    network let go: its published ports are free again)."""
    sig = _signal(request.arg("signal", "KILL"))
    container = engine.runtime.get(id)
    if not (container.state.running or container.restarting):  # a restart pending: cancelled
        raise ApiError(409, f"Container {container.id} is not running")
    events.container_event(engine, "kill", container.id, container, signal=str(int(sig)))
    engine.runtime.kill(container.id, sig)  # before its "die", as dockerd's events come
    return empty(204)


def _signal(name: str) -> int:
    """`KILL`, `SIGHUP`, `1`... as dockerd parses them."""
    if name.isdigit():
        if not 0 < int(name) <= signals.SIGRTMAX:
            raise ApiError(400, f"Invalid signal: {name}")
        return int(name)
    try:
        return signals.Signals["SIG" + name.upper().removeprefix("SIG")]
    except KeyError:
        raise ApiError(400, f"Invalid signal: {name}") from None


def remove(engine, request, id: str) -> Response:
    container = engine.runtime.get(id)
    engine.runtime.remove(id, force=request.flag("force"))
    engine.events.publish(
        "container", "destroy", container.id, name=container.name, image=container.config.image
    )
    engine.volumes.removed_container(container, volumes=request.flag("v"))
    return empty(204)


def wait(engine, request, id: str) -> Response:
    """Headers at once; the body when the condition is met (not-running, next-exit, removed)."""
    condition = request.arg("condition", "not-running")
    if condition not in ("not-running", "next-exit", "removed"):
        raise ApiError(400, f"invalid condition: {condition}")
    container = engine.runtime.get(id)
    alive = functools.partial(_client_alive, request.socket)
    return Response(200, stream=_wait_body(engine, container, condition, alive))


def _wait_body(engine, container: Container, condition: str, alive):
    code = _wait_for(engine.runtime, container, condition, alive)
    if code is not None:
        yield json.dumps({"StatusCode": code, "Error": None}).encode() + b"\n"


def _wait_for(runtime, container: Container, condition: str, alive) -> int | None:
    started_at = container.state.started_at
    must_start = condition == "next-exit" and not container.state.running
    while alive():
        try:
            current = runtime.get(container.id)
        except ContainerNotFound:
            return runtime.removed(container).state.exit_code
        if must_start and current.state.started_at != started_at:
            must_start = False
        if current.state.running:
            try:
                current = runtime.wait(current.id, timeout=1.0)
            except TimeoutError:
                continue
            except ContainerNotFound:  # removed between our two looks
                return runtime.removed(current).state.exit_code
            if current.state.status == "removed":
                return current.state.exit_code
        done = not must_start and not current.state.running
        if done and (condition != "removed" or _gone(runtime, current)):
            return current.state.exit_code
        container = current
        time.sleep(_POLL)
    return None


def _gone(runtime, container: Container) -> bool:
    try:
        runtime.get(container.id)
    except ContainerNotFound:
        return True
    return False


# -- output ------------------------------------------------------------------------------------


def logs(engine, request, id: str) -> Response:
    container = engine.runtime.get(id)
    wanted = {s for s in ("stdout", "stderr") if request.flag(s)}
    if not wanted:
        raise ApiError(400, "You must choose at least one stream")
    if container.config.create_options.log_driver == "none":
        raise ApiError(501, "configured logging driver does not support reading")
    tail = request.arg("tail", "all")
    options = {
        "follow": request.flag("follow"),
        "since": float(request.arg("since") or 0),
        "until": float(request.arg("until") or 0),
        "tail": None if tail in ("all", "") else max(int(tail), 0),
    }
    tty = container.config.create_options.tty
    entries = engine.runtime.logs(id, **options)
    chunks = _log_chunks(entries, wanted, tty, request.flag("timestamps"))
    return Response(200, content_type=streams.RAW if tty else streams.MULTIPLEXED, stream=chunks)


def _log_chunks(entries, wanted: set[str], tty: bool, timestamps: bool):
    for entry in entries:
        if entry.stream in wanted:
            data = (entry.time.encode() + b" " if timestamps else b"") + entry.data
            yield streams.encode(entry.stream, data, tty=tty)


def resize(engine, request, id: str) -> Response:
    engine.runtime.resize(id, request.int_arg("h", 24), request.int_arg("w", 80))
    return empty(200)


# -- top and stats -----------------------------------------------------------------------------


def top(engine, request, id: str) -> Response:
    if request.arg("ps_args", "-ef") != "-ef":  # the rows are ps -ef's, built here
        raise ApiError(400, "ps_args other than -ef are not supported by this engine yet")
    container = engine.runtime.get(id)
    if not container.state.running:
        raise ApiError(409, f"Container {container.id} is not running")
    inside = _pid_namespace(container.state.pid)
    pids = engine.runtime.cgroups.procs(container.id)
    rows = [_process_row(p) for p in pids if _pid_namespace(p) == inside]
    titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    return json_response({"Titles": titles, "Processes": [r for r in rows if r]})


def _pid_namespace(pid: int) -> str | None:
    """Which PID namespace: an exec's helper shares the cgroup but stays outside it."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _process_row(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = (int(fields[11]) + int(fields[12])) // os.sysconf("SC_CLK_TCK")
    cpu_time = time.strftime("%H:%M:%S", time.gmtime(ticks))
    return [str(uid), str(pid), fields[1], "0", "", "?", cpu_time, cmd or f"[{stat.split()[1]}]"]


def stats(engine, request, id: str) -> Response:
    stream = request.flag("stream", True) and not request.flag("one-shot")
    container = engine.runtime.get(id)  # 404 now, before the 200 of a stream is sent
    return Response(200, stream=_stats_stream(engine, container.id, stream))


def _stats_stream(engine, id: str, stream: bool):
    previous = _empty_stats()
    while True:
        try:
            container = engine.runtime.get(id)
        except ContainerNotFound:  # removed while streaming: the stream ends, as dockerd's
            return
        current = _stats(engine, container, previous)
        yield json.dumps(current).encode() + b"\n"
        if not stream or not container.state.running:
            return
        previous = current
        time.sleep(1)


def _empty_stats() -> dict:
    return {"cpu_stats": {"cpu_usage": {"total_usage": 0}, "system_cpu_usage": 0}}


def _stats(engine, container: Container, previous: dict) -> dict:
    base = {"read": logfile.now(), "name": "/" + container.name, "id": container.id}
    if not container.state.running:
        return {**base, "memory_stats": {}, "cpu_stats": {}, "precpu_stats": {}, "pids_stats": {}}
    s = engine.runtime.stats(container.id)
    cpus = os.cpu_count() or 1
    return {
        **base,
        "preread": previous.get("read", "0001-01-01T00:00:00Z"),
        "pids_stats": {"current": s.pids_current, "limit": s.pids_limit or 0},
        "memory_stats": {
            "usage": s.memory_usage,
            "limit": s.memory_limit or _host_memory(),
            "stats": {**s.memory_stat, "inactive_file": s.memory_cache},
        },
        "cpu_stats": {
            "cpu_usage": {
                "total_usage": s.cpu_usage_ns,
                "usage_in_kernelmode": s.cpu_system_ns,
                "usage_in_usermode": s.cpu_user_ns,
            },
            "system_cpu_usage": _system_cpu_ns(),
            "online_cpus": cpus,
        },
        "precpu_stats": previous.get("cpu_stats", {}),
        "blkio_stats": _blkio(s.io),
        **networking.interface_stats(engine, container),
    }


def _blkio(io) -> dict:
    """dockerd's shape: bytes read and written per device (None: not accounted here)."""
    fields = ("major", "minor", "op", "value")
    entries = None if io is None else [dict(zip(fields, e, strict=True)) for e in io]
    return {"io_service_bytes_recursive": entries}


def _host_memory() -> int:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) * 1024


def _system_cpu_ns() -> int:
    """Total CPU time of the machine, as dockerd reports it (from /proc/stat, in ns)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:8]
    return sum(int(x) for x in fields) * 10**9 // os.sysconf("SC_CLK_TCK")


def prune(engine, request) -> Response:
    """POST /containers/prune: remove every container that is not running (nor waiting to
    restart: dockerd counts those as running)."""
    deleted, reclaimed = [], 0
    for c in engine.runtime.list(all=True):
        if c.state.running or c.restarting:
            continue
        reclaimed += tree_size(c.directory / "upper")
        engine.runtime.remove(c.id)
        engine.events.publish("container", "destroy", c.id, name=c.name, image=c.config.image)
        deleted.append(c.id)
    return json_response({"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed})
