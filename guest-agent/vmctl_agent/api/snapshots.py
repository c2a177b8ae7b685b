"""A container's filesystem as its changes (GET /containers/{id}/changes, `docker diff`), as
one tar (GET /containers/{id}/export, `docker export`), and as a new image (POST /commit,
`docker commit`: its upper directory stored as a layer the way a build step's is, over the
container's image, with `changes` applied as dockerd applies them; a running container paused
meanwhile unless `pause=0`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import lzma
import os
import urllib.request

from vmctl_agent.api import events
from vmctl_agent.api.http import ApiError, Response, json_response
from vmctl_agent.build import commit as images_commit
from vmctl_agent.build import context, dispatch, dockerfile, layertar
from vmctl_agent.build import export as fs_export
from vmctl_agent.build.steps import runtime_made
from vmctl_agent.errors import AgentError, UnsafeLayer
from vmctl_agent.store import reference as refs
from vmctl_agent.store.content import remove_tree
from vmctl_agent.store.layers import LayerExtractor


def export(engine, request, id: str) -> Response:
    """GET /containers/{id}/export: `docker export`, streamed."""
    container = engine.runtime.get(id)
    content = engine.images.content
    work = content.tmp / f"export-{os.urandom(6).hex()}"
    chunks = fs_export.export(
        content.layers, container.config.layers, container.directory / "upper", work
    )
    return Response(200, content_type="application/x-tar", stream=_locked(engine, chunks))


def _locked(engine, chunks):
    """While it streams, nothing collects the layers it reads (or its work directory)."""
    with engine.images.content.gc_lock(shared=True):
        yield from chunks


def commit(engine, request) -> Response:
    """POST /commit?container=&repo=&tag=&author=&comment=&changes=&pause="""
    container = engine.runtime.get(request.arg("container") or _missing("container"))
    tag = _tag(request)
    config = _container_config(engine, container, request.json())
    step_config = copy.deepcopy(config)  # what the container ran with, for its history
    step_config["Cmd"] = list(container.config.process_spec.args)
    state = _state(engine, container, config)
    for text in request.query.get("changes", []):
        _apply_change(state, text)
    state.author = request.arg("author")
    with _paused(engine, container, request.flag("pause", True)):
        image_id = _store(engine, container, state, step_config, request.arg("comment"))
    if tag:
        engine.images.tag(image_id, tag)
    engine.events.publish("container", "commit", container.id, name=container.name)
    return json_response({"Id": image_id}, 201)


@contextlib.contextmanager
def _paused(engine, container, pause: bool):
    """A running container is paused while its layer is read (dockerd's default), so what is
    committed is one moment of it; one that was paused already stays so."""
    if not (
        pause and container.state.running and not container.paused and _pause(engine, container)
    ):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(AgentError):  # ended meanwhile (killed): nothing to thaw
            engine.runtime.unpause(container.id)
            events.container_event(engine, "unpause", container.id, container)


def _pause(engine, container) -> bool:
    """False if it ended before it could be paused (then, as dockerd, commit goes on)."""
    try:
        engine.runtime.pause(container.id)
    except AgentError:
        return False
    events.container_event(engine, "pause", container.id, container)
    return True


def _store(engine, container, state, step_config: dict, comment: str) -> str:
    """The container's upper directory as a layer, and the image over it."""
    note = {k: v for k, v in (("author", state.author), ("comment", comment)) if v}
    with engine.images.content.gc_lock(shared=True):
        upper = container.directory / "upper"
        layer = layertar.store_layer(engine.images.content, upper, runtime_made)
        return images_commit.commit(engine.images, state, step_config, layer, container.id, note)


def import_image(engine, request) -> Response:
    """POST /images/create?fromSrc=-|URL&repo=&tag=&message=&changes=: `docker import`, a
    one-layer image from a tar (plain or compressed), its config only what `changes` sets."""
    source = request.arg("fromSrc")
    tag = _tag(request)
    state = dispatch.StageState("", {}, [], [])
    for text in request.query.get("changes", []):
        _apply_change(state, text)
    note = {"comment": request.arg("message") or f"Imported from {source}"}
    with engine.images.content.gc_lock(shared=True):
        work = engine.images.content.tmp / f"import-{os.urandom(6).hex()}"
        work.mkdir()
        try:
            layer = _import_layer(engine, request, source, work)
            image_id = images_commit.commit(engine.images, state, {"Cmd": None}, layer, "", note)
        finally:
            remove_tree(work)
    if tag:
        engine.images.tag(image_id, tag)
    engine.events.publish("image", "import", image_id)
    return Response(200, json.dumps({"status": image_id}).encode() + b"\r\n")


def _import_layer(engine, request, source: str, work) -> dict | None:
    body = request.body_stream() if source == "-" else _download(source, work)
    try:
        context.spool_tar(body, work / "layer.tar")
        (work / "rootfs").mkdir()
        with open(work / "layer.tar", "rb") as stream:
            LayerExtractor(str(work / "rootfs")).extract(stream)
    except UnsafeLayer as e:
        raise ApiError(400, str(e).replace("layer", "imported tar")) from None
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise ApiError(400, f"the import is not a readable tar archive: {e}") from None
    finally:
        body.close()
    return layertar.store_layer(engine.images.content, work / "rootfs")


def _download(url: str, work):
    if not url.startswith(("http://", "https://")):
        raise ApiError(400, f"fromSrc must be - (the request body) or an http(s) URL: {url}")
    try:
        return urllib.request.urlopen(url, timeout=60)
    except (OSError, ValueError) as e:
        raise ApiError(400, f"failed to GET {url}: {e}") from None


def _missing(name: str) -> str:
    raise ApiError(400, f"{name} is required")


def _tag(request) -> str:
    repo, tag = request.arg("repo"), request.arg("tag")
    if not repo:
        if tag:
            raise ApiError(400, "tag is given without a repository (repo)")
        return ""
    ref = refs.parse(f"{repo}:{tag}" if tag else repo)
    if ref.digest:
        raise ApiError(400, "refusing to create a tag with a digest reference")
    return str(ref)


def _container_config(engine, container, body: dict) -> dict:
    """The image config's `config`: the image's, as the container changed it (its command,
    environment, user, directory, labels), then what the request's body sets."""
    image = engine.images.get(container.config.image_id)
    config = copy.deepcopy(image.config.get("config") or {})
    options = container.config.create_options
    if options.entrypoint is not None:
        config["Entrypoint"] = list(options.entrypoint) or None
        config["Cmd"] = None
    if options.cmd is not None:
        config["Cmd"] = list(options.cmd)
    env = dict(e.partition("=")[::2] for e in config.get("Env") or [])
    env.update(e.partition("=")[::2] for e in options.env)
    config["Env"] = [f"{k}={v}" for k, v in env.items()]
    config["WorkingDir"] = options.working_dir or config.get("WorkingDir", "")
    config["User"] = options.user or config.get("User", "")
    config["Labels"] = {**(config.get("Labels") or {}), **options.labels} or None
    config["Hostname"] = container.config.hostname
    for key, value in (body or {}).items():
        if value not in (None, "", [], {}):
            config[key] = value
    return config


def _state(engine, container, config: dict) -> dispatch.StageState:
    image = engine.images.get(container.config.image_id)
    return dispatch.StageState(
        image_id=image.id,
        config=config,
        layers=list(image.record.layers),
        history=list(image.config.get("history") or []),
    )


def _apply_change(state: dispatch.StageState, text: str) -> None:
    """One `--change` line, as a Dockerfile instruction of the kinds dockerd allows."""
    try:
        (ins,) = dockerfile.parse(text).instructions
    except ValueError:
        raise ApiError(400, f"invalid change: {text!r}") from None
    except dockerfile.DockerfileError as e:
        raise ApiError(400, str(e)) from None
    if ins.keyword not in COMMIT_CHANGES:
        keyword = ins.keyword.upper()
        raise ApiError(
            400, f"dockerfile parse error on line 1: {keyword} is not a valid change command"
        )
    dispatch.apply(state, ins, state.variables({}))


# The instructions `docker commit --change` takes, as dockerd lists them.
COMMIT_CHANGES = (
    "cmd",
    "entrypoint",
    "env",
    "expose",
    "label",
    "onbuild",
    "user",
    "volume",
    "workdir",
)
