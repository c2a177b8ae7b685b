"""Talking to registries about an image by name: POST /images/{name}/push (`docker push`),
with dockerd's progress stream, and GET /distribution/{name}/json (what the registry has:
the manifest's descriptor and the platforms it serves)."""

from __future__ import annotations

import hashlib
import json
import queue
import threading

from vmctl_agent.api.http import ApiError, Response, json_response
from vmctl_agent.api.images import requested_platform
from vmctl_agent.errors import AuthenticationError, RegistryUnreachable, VerificationError
from vmctl_agent.store import manifest as mf
from vmctl_agent.store import reference as refs
from vmctl_agent.store.manifest import Platform
from vmctl_agent.store.push import Pusher, PushError

_DONE = object()


def push(engine, request, name: str) -> Response:
    """POST /images/{name}/push?tag=: one tag, or every tag of the repository when none is
    given. An error before any progress is an error response; later ones end the stream."""
    platform = requested_platform(request.arg("platform"))
    if platform is not None and platform != Platform.native():
        raise ApiError(400, f"platform {platform} is not this engine's: it keeps linux/amd64")
    names = _names(engine, name, request.arg("tag"))
    pusher = Pusher(
        engine.images, engine.registry_client(request.headers.get("X-Registry-Auth", ""))
    )
    progress: queue.Queue = queue.Queue()
    threading.Thread(target=_push, args=(engine, pusher, names, progress), daemon=True).start()
    first = progress.get()
    if isinstance(first, Exception):
        raise _api_error(first)
    return Response(200, stream=_stream(first, progress))


def _names(engine, name: str, tag: str) -> list[str]:
    ref = refs.parse(name, default_tag=False)
    if ref.digest:
        raise ApiError(400, "cannot push a digest reference: push a tag")
    if tag or ref.tag:
        return [str(ref.with_tag(tag or ref.tag))]
    tags = sorted({t for image in engine.images.list() for t in image.repo_tags
                   if refs.parse(t).name == ref.name})  # fmt: skip
    if not tags:
        raise ApiError(404, f"An image does not exist locally with the tag: {ref.familiar_name}")
    return tags


def _push(engine, pusher: Pusher, names: list[str], progress: queue.Queue) -> None:
    """Runs to the end even if the client leaves: a half-pushed image is only blobs."""
    try:
        for name in names:
            pusher.push(name, progress.put)
            engine.events.publish("image", "push", refs.parse(name).familiar(), name=name)
        progress.put(_DONE)
    except Exception as e:
        progress.put(e)


def _stream(first: dict, progress: queue.Queue):
    yield json.dumps(first).encode() + b"\r\n"
    while (item := progress.get()) is not _DONE:
        if isinstance(item, Exception):
            error = {"errorDetail": {"message": str(item)}, "error": str(item)}
            yield json.dumps(error).encode() + b"\r\n"
            return
        yield json.dumps(item).encode() + b"\r\n"


def _api_error(error: Exception) -> Exception:
    if isinstance(error, PushError):
        return ApiError(error.status, str(error))
    if isinstance(error, AuthenticationError | RegistryUnreachable):
        return ApiError(401 if isinstance(error, AuthenticationError) else 500, str(error))
    return error


# -- GET /distribution/{name}/json -----------------------------------------------------------

_PLATFORM_KEYS = ("architecture", "os", "os.version", "os.features", "variant")


def inspect(engine, request, name: str) -> Response:
    """The descriptor of `name`'s manifest on its registry (mirrors first for docker.io, as a
    pull), and its platforms: an index's entries, or an image's config's."""
    ref = refs.parse(name)
    client = engine.registry_client(request.headers.get("X-Registry-Auth", ""))
    session, fetched = client.resolve(ref)
    data = mf.load(fetched)
    if mf.kind(fetched, data) == "index":
        platforms = [_platform(entry.get("platform") or {}) for entry in data["manifests"]]
    else:
        platforms = [_platform(_config(session, mf.parse_image(data).config))]
    descriptor = {"mediaType": fetched.media_type, "digest": fetched.digest,
                  "size": len(fetched.body)}  # fmt: skip
    return json_response({"Descriptor": descriptor, "Platforms": platforms})


def _config(session, config: mf.Descriptor) -> dict:
    with session.open_blob(config.digest) as response:
        body = response.read(config.size + 1)
    if "sha256:" + hashlib.sha256(body).hexdigest() != config.digest:
        raise VerificationError(f"image config {config.digest} failed verification")
    return json.loads(body)


def _platform(source: dict) -> dict:
    """An OCI platform as dockerd encodes it: empty fields left out."""
    return {key: source[key] for key in _PLATFORM_KEYS if source.get(key)}
