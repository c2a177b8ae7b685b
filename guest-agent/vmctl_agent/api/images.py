"""/images: list, pull (streaming Docker's progress messages), inspect, tag, remove."""

from __future__ import annotations

import json
import queue
import threading
from datetime import datetime

from vmctl_agent.api import build, snapshots
from vmctl_agent.api.http import ApiError, Response, empty, json_response
from vmctl_agent.errors import ImageNotFound
from vmctl_agent.store import archive
from vmctl_agent.store import reference as refs

_DONE = object()


def list_(engine, request) -> Response:
    """`docker images`: without `all`, a build's intermediate images (untagged parents of
    another image) are left out, as dockerd leaves them out."""
    rows = []
    images = engine.images.list()
    parents = {image.record.parent for image in images}
    for image in images:
        if not request.flag("all") and not image.repo_tags and image.id in parents:
            continue
        info = image.inspect()
        rows.append(
            {
                "Id": image.id,
                "ParentId": image.record.parent,
                "RepoTags": info["RepoTags"],
                "RepoDigests": info["RepoDigests"],
                "Created": _unix(info["Created"]),
                "Size": info["Size"],
                "SharedSize": -1,
                "VirtualSize": info["Size"],
                "Labels": (info["Config"] or {}).get("Labels") or None,
                "Containers": -1,
            }
        )
    return json_response(sorted(rows, key=lambda r: r["Created"], reverse=True))


def _unix(created: str) -> int:
    try:
        return int(datetime.fromisoformat(created.replace("Z", "+00:00")[:26]).timestamp())
    except ValueError:
        return 0


def create(engine, request) -> Response:
    """POST /images/create?fromImage=&tag= : a pull. An error before any progress is a plain
    error response (what makes `docker pull` print it); later ones end the stream."""
    if request.arg("fromSrc"):
        return snapshots.import_image(engine, request)
    name = _reference(request.arg("fromImage"), request.arg("tag"))
    progress: queue.Queue = queue.Queue()
    puller = engine.puller(request.headers.get("X-Registry-Auth", ""))
    args = (engine, puller, name, progress)
    threading.Thread(target=_pull, args=args, daemon=True).start()
    first = progress.get()
    if isinstance(first, Exception):
        raise first
    return Response(200, stream=_progress(first, progress))


def _reference(image: str, tag: str) -> str:
    if not image:
        raise ApiError(400, "fromImage is required")
    ref = refs.parse(image, default_tag=False)
    if tag and tag.startswith("sha256:"):
        return str(ref.with_digest(tag))
    if tag:
        return str(ref.with_tag(tag))
    return str(ref if ref.tag or ref.digest else ref.with_tag("latest"))


def _pull(engine, puller, name: str, progress: queue.Queue) -> None:
    """Runs to the end even if the client goes away: the store stays consistent."""
    try:
        puller.pull(name, progress.put)
        engine.events.publish("image", "pull", refs.parse(name).familiar(), name=name)
        progress.put(_DONE)
    except Exception as e:
        progress.put(e)


def _progress(first: dict, progress: queue.Queue):
    yield json.dumps(first).encode() + b"\r\n"
    while True:
        item = progress.get()
        if item is _DONE:
            return
        if isinstance(item, Exception):
            error = {"errorDetail": {"message": str(item)}, "error": str(item)}
            yield json.dumps(error).encode() + b"\r\n"
            return
        yield json.dumps(item).encode() + b"\r\n"


def history(engine, request, name: str) -> Response:
    """GET /images/{name}/history: newest first; each row takes an image id while the chain of
    build parents lasts, then `<missing>` (pulled images keep no parents), as dockerd does."""
    image = engine.images.get(name)
    rows = _history_rows(image)
    current = image
    for row in rows:
        row["Id"] = current.id
        row["Tags"] = [refs.parse(t).familiar() for t in current.repo_tags] or None
        if not current.record.parent:
            break
        try:
            current = engine.images.get(current.record.parent)
        except ImageNotFound:
            break
    return json_response(rows)


def _history_rows(image) -> list[dict]:
    rows, layers = [], iter(image.record.layers)
    for entry in image.config.get("history") or []:
        layer = None if entry.get("empty_layer") else next(layers, None)
        rows.append(
            {
                "Id": "<missing>",
                "Created": _unix(entry.get("created", "")),
                "CreatedBy": entry.get("created_by", ""),
                "Tags": None,
                "Size": int(layer.get("size", 0)) if layer else 0,
                "Comment": entry.get("comment", ""),
            }
        )
    return rows[::-1]


def inspect(engine, request, name: str) -> Response:
    return json_response(engine.images.get(name).inspect())


def tag(engine, request, name: str) -> Response:
    repo, tag_ = request.arg("repo"), request.arg("tag") or "latest"
    if not repo:
        raise ApiError(400, "repository name (repo) is required")
    engine.images.tag(name, f"{repo}:{tag_}")
    engine.events.publish("image", "tag", engine.images.get(name).id, name=f"{repo}:{tag_}")
    return empty(201)


def remove(engine, request, name: str) -> Response:
    answer = engine.images.remove(name, force=request.flag("force"))
    for item in answer:
        ((action, ref),) = item.items()
        engine.events.publish("image", action.lower().replace("deleted", "delete"), ref)
    return json_response(answer)


def prune(engine, request) -> Response:
    """POST /images/prune: dangling (untagged) images, or with dangling=false every image no
    container uses (`docker image prune -a`)."""
    filters = json.loads(request.arg("filters") or "{}")
    dangling = filters.get("dangling", ["true"])
    only_dangling = next(iter(dangling), "true") in ("true", "1")  # a list, or a {"x": true} map
    used = {c.config.image_id for c in engine.runtime.list(all=True)} | build.pinned()
    deleted, reclaimed, tried = [], 0, set()
    while batch := _prunable(engine.images.list(), used | tried, only_dangling):
        for image in batch:
            tried.add(image.id)
            reclaimed += image.record.size
            deleted += engine.images.remove(image.id, force=True)
    return json_response({"ImagesDeleted": deleted or None, "SpaceReclaimed": reclaimed})


def _prunable(images, skip: set[str], only_dangling: bool) -> list:
    """Images to remove now, but those in `skip`; a build's parents go with their children
    (or in a later round, once those are gone)."""
    parents = {image.record.parent for image in images}
    return [
        image
        for image in images
        if image.id not in skip
        and image.id not in parents
        and not (only_dangling and image.repo_tags)
    ]


def save(engine, request, name: str = "") -> Response:
    """GET /images/{name}/get or /images/get?names=...: `docker save`."""
    names = [name] if name else request.query.get("names", [])
    if not names:
        raise ApiError(400, "no images to save")
    for each in names:
        engine.images.get(each)  # a missing image is a 404 before any byte is sent
    return Response(
        200, content_type="application/x-tar", stream=archive.save(engine.images, names)
    )


def load(engine, request) -> Response:
    """POST /images/load: `docker load`, from the request body as it streams in."""
    lines = list(archive.load(engine.images, request.body_stream()))
    for line in lines:
        engine.events.publish("image", "load", line.rpartition(" ")[2])
    body = b"".join(json.dumps({"stream": line + "\n"}).encode() + b"\n" for line in lines)
    return Response(200, body)
