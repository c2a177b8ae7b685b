"""POST /build: dockerd's classic builder, as the docker CLI sends it without buildx (or with
DOCKER_BUILDKIT=0) and as docker-py's images.build does. The context is read and the
Dockerfile checked before the answer starts (a mistake there is a plain 400, as dockerd
gives it); the steps then stream. Every query field dockerd takes is honoured or refused
with a 400 naming it."""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import json
import threading
from pathlib import Path

from vmctl_agent.api.http import ApiError, Response, client_alive, json_response
from vmctl_agent.build import commit, context, dockerfile, stages, workspace
from vmctl_agent.build.builder import Builder, BuildOptions
from vmctl_agent.build.steps import ClientGone, RunLimits, StepFailed
from vmctl_agent.errors import AgentError
from vmctl_agent.store import reference as refs
from vmctl_agent.store.auth import Credentials
from vmctl_agent.store.content import remove_tree
from vmctl_agent.store.pull import Puller
from vmctl_agent.store.registry import RegistryClient, RegistryConfig

# Fields a client may send at their "unset" value only (the CLI sends them all, unset).
_UNSET_ONLY = {
    "cpusetcpus": "", "cpusetmems": "", "cpushares": "0", "cgroupparent": "", "memswap": "0",
    "isolation": "", "squash": "0", "ulimits": "null",
    "remote": "", "session": "", "outputs": "", "buildid": "", "securityopt": "",
}  # fmt: skip
_UNSET_ALSO = {
    "ulimits": ("[]", ""),
    "outputs": ("[]", "null"),
    "isolation": ("default",),  # Linux has one isolation
    "memswap": ("-1",),  # unlimited swap: what the step containers have
}
_PLATFORMS = ("", "linux/amd64", "linux/x86_64", "linux", "amd64")


def build(engine, request) -> Response:
    options, cache_from = _options(engine, request)
    stack = contextlib.ExitStack()
    work = _workspace(engine)
    stack.callback(_remove_later, work)
    try:
        root = context.receive(request.body_stream(), work)
        text = context.read_dockerfile(root, _dockerfile(request))
        context.apply_dockerignore(root)
        plan = stages.plan(dockerfile.parse(text))
        plan.target(options.target)
    except (dockerfile.DockerfileError, context.ContextError) as e:
        stack.close()
        raise ApiError(400, str(e)) from None
    except BaseException:
        stack.close()
        raise
    puller = _puller(engine, request)
    alive = functools.partial(client_alive, request.socket)
    pins = _pins()
    stack.callback(_unpin, pins)
    builder = Builder(engine.images, engine.runtime, puller, work, root, options, alive, pins)
    stream = _stream(engine, builder, plan, options, cache_from, stack)
    return Response(200, stream=stream)


# The images running builds have made or use: image prunes leave them alone.
_PINNED: list[set[str]] = []
_PINNED_LOCK = threading.Lock()


def _pins() -> set[str]:
    pins: set[str] = set()
    with _PINNED_LOCK:
        _PINNED.append(pins)
    return pins


def _unpin(pins: set[str]) -> None:
    with _PINNED_LOCK:
        _PINNED.remove(pins)


def pinned() -> set[str]:
    """Every image a running build still needs."""
    with _PINNED_LOCK:
        return set().union(*_PINNED)


def _workspace(engine) -> Path:
    """The build's own directory, beside the store (not in its tmp, which a collection
    empties); ones left by an agent that died are removed first."""
    builds = engine.config.data_root / "builds"
    workspace.sweep(builds, engine.runtime)
    return workspace.create(builds)


def sweep(engine) -> None:
    """At the agent's start: what builds of an agent killed mid-build left behind."""
    workspace.sweep(engine.config.data_root / "builds", engine.runtime, starting=True)


def _remove_later(path: Path) -> None:
    """Delete the workspace after the answer has ended: the client should not wait for
    thousands of unlinks (dockerd's classic builder also cleans up after replying). If the
    agent dies first, the next start removes what is left (its pid is gone)."""
    threading.Thread(target=remove_tree, args=(path,), name="build-cleanup").start()


def _stream(engine, builder: Builder, plan, options: BuildOptions, cache_from, stack):
    """The build's messages as the CLI reads them; a failure ends the stream with
    errorDetail (and the exit code of a failed RUN). Closing it stops the build."""
    with stack:
        try:
            note = _note_cache_from(engine, cache_from) if not options.quiet else None
            if note:
                yield note
            for message in builder.run(plan):
                yield json.dumps(message).encode() + b"\r\n"
        except ClientGone:
            return  # nobody to tell; the step's container is gone already
        except StepFailed as e:
            yield _error(str(e), e.code)
            return
        except AgentError as e:
            yield _error(str(e), 0)
            return
        except OSError as e:
            yield _error(_disk_message(e), 0)
            return
    for tag in options.tags:
        engine.events.publish("image", "tag", builder.image_id, name=refs.parse(tag).familiar())


def _disk_message(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return (
            "no space left on device while building: free space (docker image prune, "
            "docker builder prune, docker system prune) and build again"
        )
    return f"the build failed writing its files: {error}"


def _note_cache_from(engine, images: list[str]) -> bytes | None:
    """--cache-from: say which images are not here (dockerd only logs it)."""
    missing = [name for name in images if not _exists(engine, name)]
    if not missing:
        return None
    note = f"[Warning] --cache-from {' '.join(missing)}: no such image here; not used as cache\n"
    return json.dumps({"stream": note}).encode() + b"\r\n"


def _exists(engine, name: str) -> bool:
    try:
        engine.images.get(name)
    except AgentError:
        return False
    return True


def _error(message: str, code: int) -> bytes:
    detail = {"code": code, "message": message} if code else {"message": message}
    return json.dumps({"errorDetail": detail, "error": message}).encode() + b"\r\n"


def _options(engine, request) -> tuple[BuildOptions, list[str]]:
    _refuse_unsupported(request)
    cache_from = _json_list(request, "cachefrom")
    tags = tuple(request.query.get("t", []))
    for tag in tags:
        ref = refs.parse(tag)
        if ref.digest:
            raise ApiError(400, f"invalid reference format: {tag} has a digest")
    platform = request.arg("platform")
    if platform.lower() not in _PLATFORMS:
        raise ApiError(
            400, f'"{platform}" is not a platform this engine builds for: it builds linux/amd64'
        )
    return BuildOptions(
        tags=tags,
        build_args=_json_map(request, "buildargs"),
        labels=_json_map(request, "labels"),
        target=request.arg("target"),
        nocache=request.flag("nocache"),
        remove=request.flag("rm", True) or request.flag("forcerm"),
        quiet=request.flag("q"),
        pull=request.flag("pull"),
        limits=_limits(engine, request),
        cache_from=tuple(cache_from),
    ), cache_from


def _dockerfile(request) -> str:
    """The first `dockerfile` value, as Go's FormValue reads it (docker-py sends its name,
    then the text, for a Dockerfile from outside the context it adds to the tar)."""
    return (request.query.get("dockerfile") or ["Dockerfile"])[0] or "Dockerfile"


def _refuse_unsupported(request) -> None:
    for name, unset in _UNSET_ONLY.items():
        value = request.arg(name, unset)
        if value != unset and value not in _UNSET_ALSO.get(name, ()):
            raise ApiError(
                400, f"the build option {name}={value!r} is not supported by this engine"
            )
    if request.arg("version", "1") not in ("1", ""):
        raise ApiError(
            400,
            "BuildKit builds (version=2) need buildx; this engine has the classic builder: "
            "set DOCKER_BUILDKIT=0",
        )


def _limits(engine, request) -> RunLimits:
    """The RUN containers' network, /dev/shm, extra hosts and limits, as `docker run` would
    take them (`default` is the engine's default network)."""
    network = _network(engine, request.arg("networkmode", "default") or "default")
    extra_hosts = _extra_hosts(request)
    if extra_hosts and network in ("none", "host"):
        raise ApiError(
            400, f"extrahosts is not supported with network {network}: it applies to bridge "
            "networks"
        )  # fmt: skip
    quota, period = request.int_arg("cpuquota", 0), request.int_arg("cpuperiod", 0) or 100000
    nano_cpus = quota * 10**9 // period if quota else 0
    shm_size = request.int_arg("shmsize", 0) or 0
    if shm_size < 0:
        raise ApiError(400, "shmsize must be a positive number of bytes")
    memory = request.int_arg("memory", 0) or 0
    return RunLimits(network, memory, nano_cpus, shm_size, extra_hosts)


def _network(engine, mode: str) -> str:
    if mode == "default":
        usable = engine.config.default_bridge and not engine.network_problem
        return "bridge" if usable else "none"
    if mode in ("none", "host"):
        return mode
    try:
        return engine.networks.find(mode).name
    except AgentError:
        raise ApiError(404, f"network {mode} not found") from None


def _extra_hosts(request) -> tuple[str, ...]:
    """`extrahosts`: repeated `name:ip` values (docker-py, the CLI), or one JSON list."""
    values = request.query.get("extrahosts") or []
    if len(values) == 1 and values[0].startswith("["):
        values = _json_list(request, "extrahosts")
    return tuple(v for v in values if v and v != "null")


def _json_list(request, name: str) -> list[str]:
    raw = request.arg(name)
    try:
        value = json.loads(raw) if raw else []
    except ValueError:
        raise ApiError(400, f"invalid JSON in {name}: {raw[:80]}") from None
    if value is not None and not isinstance(value, list):
        raise ApiError(400, f"{name} must be a JSON list")
    return [str(v) for v in value or []]


def _json_map(request, name: str) -> dict[str, str]:
    raw = request.arg(name)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ApiError(400, f"invalid JSON in {name}: {raw[:80]}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"{name} must be a JSON object")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _puller(engine, request):
    credentials = _registry_config(request.headers.get("X-Registry-Config", ""))

    def lookup(host: str) -> Credentials | None:
        hub = (
            ("https://index.docker.io/v1/", "index.docker.io") if host.endswith("docker.io") else ()
        )
        for key in (host, f"https://{host}", f"http://{host}", *hub):
            if key in credentials:
                return credentials[key]
        return None

    client = RegistryClient(RegistryConfig.of(engine.config), credentials=lookup)
    puller = Puller(engine.images, client)

    def pull(name: str) -> list[dict]:
        messages: list[dict] = []
        puller.pull(name, messages.append)
        return messages

    return pull


def _registry_config(header: str) -> dict[str, Credentials]:
    """X-Registry-Config: base64url JSON {registry: {"username", "password"}}."""
    if not header:
        return {}
    try:
        data = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, TypeError):
        raise ApiError(400, "X-Registry-Config is not base64-encoded JSON") from None
    found = {}
    for key, entry in (data or {}).items():
        if isinstance(entry, dict) and entry.get("username"):
            found[key.rstrip("/")] = Credentials(entry["username"], entry.get("password", ""))
            found[key] = found[key.rstrip("/")]
    return found


def prune(engine, request) -> Response:
    """POST /build/prune: the classic builder's cache is its index of step results; the
    images stay (their tags and children need them) and go with `docker image prune`."""
    for name in ("filters", "keep-storage", "reserved-space", "max-used-space", "min-free-space"):
        value = request.arg(name)
        if value not in ("", "0", "{}", "null"):
            raise ApiError(400, f"the build cache prune option {name}={value!r} is not supported")
    keys = commit.BuildCache(engine.images).prune()
    return json_response({"CachesDeleted": keys or None, "SpaceReclaimed": 0})


def cache_rows(engine) -> list[dict]:
    """`docker system df`'s Build Cache: one row per cached step, sized by its own layer
    (shared with the images that hold it)."""
    rows = []
    for key, image_id in commit.BuildCache(engine.images).entries():
        image = engine.images.get(image_id)
        history = image.config.get("history") or [{}]
        own = image.record.layers[-1] if not history[-1].get("empty_layer") else None
        rows.append(
            {
                "ID": key[:25],
                "Parents": [image.record.parent] if image.record.parent else None,
                "Type": "regular",
                "Description": history[-1].get("created_by", ""),
                "InUse": False,
                "Shared": True,
                "Size": int(own["size"]) if own else 0,
                "CreatedAt": image.config.get("created", ""),
                "LastUsedAt": None,
                "UsageCount": 0,
            }
        )
    return rows
