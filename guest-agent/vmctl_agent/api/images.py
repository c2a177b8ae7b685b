"""/images: list, pull (streaming Docker's progress messages), inspect, tag, remove."""

from __future__ import annotations

import json
import queue
import threading
from datetime import datetime

from vmctl_agent.api import build, imagefilters, inspection, labelfilter, snapshots
from vmctl_agent.api.http import ApiError, Response, empty, json_response, parse_filters
from vmctl_agent.errors import AgentError, ImageNotFound
from vmctl_agent.store import archive
from vmctl_agent.store import reference as refs
from vmctl_agent.store.manifest import Platform

_DONE = object()
_OSES = ("linux", "windows", "darwin", "freebsd")
_ARCHES = {"amd64", "386", "arm", "arm64", "ppc64le", "s390x", "riscv64", "mips64le"}


def list_(engine, request) -> Response:
    """`docker images`: without `all`, a build's intermediate images (untagged parents of
    another image) are left out, as dockerd leaves them out."""
    filters = parse_filters(request.arg("filters"))
    imagefilters.check(filters)
    found = _filtered(engine, filters, everything=request.flag("all"))
    rows = [_row(image, filters) for image in found]
    return json_response(sorted((r for r in rows if r), key=lambda r: -r["Created"]))


def _filtered(engine, filters: dict[str, list[str]], everything: bool):
    """The images the dangling, label, before and since filters let through (and, unless
    `everything`, not a build's intermediate images)."""
    images = engine.images.list()
    parents = {image.record.parent for image in images}
    dangling = filters.get("dangling", [None])[-1]
    bounds = {k: _unix(engine.images.get(filters[k][-1]).inspect()["Created"]) for k in
              ("before", "since") if filters.get(k)}  # fmt: skip
    for image in images:
        if not everything and not image.repo_tags and image.id in parents:
            continue
        created = _unix(image.inspect()["Created"])
        if dangling is not None and (dangling in ("true", "1")) == bool(image.repo_tags):
            continue
        if "before" in bounds and created >= bounds["before"]:
            continue
        if "since" in bounds and created <= bounds["since"]:
            continue
        labels = (image.config.get("config") or {}).get("Labels") or {}
        if labelfilter.matches(labels, filters.get("label", [])):
            yield image


def _row(image, filters: dict[str, list[str]]) -> dict | None:
    """One image as the list shows it; None when a reference filter matches none of its."""
    info = image.inspect()
    tags, digests = list(image.repo_tags), list(image.record.repo_digests)
    if "reference" in filters:
        tags = imagefilters.matching_references(filters["reference"], tags)
        digests = imagefilters.matching_references(filters["reference"], digests)
        if not tags and not digests:
            return None
    return {
        "Id": image.id,
        "ParentId": image.record.parent,
        "RepoTags": [refs.parse(t).familiar() for t in tags],
        "RepoDigests": [refs.parse(d).familiar() for d in digests],
        "Created": _unix(info["Created"]),
        "Size": info["Size"],
        "SharedSize": -1,
        "VirtualSize": info["Size"],
        "Labels": (info["Config"] or {}).get("Labels") or None,
        "Containers": -1,
    }


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
    platform = requested_platform(request.arg("platform"))
    puller = engine.puller(request.headers.get("X-Registry-Auth", ""), platform)
    args = (engine, puller, name, progress)
    threading.Thread(target=_pull, args=args, daemon=True).start()
    first = progress.get()
    if isinstance(first, Exception):
        raise first
    return Response(200, stream=_progress(first, progress))


def requested_platform(text: str) -> Platform | None:
    """`linux/arm64`, `linux/arm/v7`, `linux` or `arm64` (Docker's short forms); None if none."""
    if not text:
        return None
    native = Platform.native()
    parts = text.lower().split("/")
    if len(parts) == 1 and parts[0] in {"linux", native.architecture} | _ARCHES:
        return native if parts[0] == "linux" else Platform("linux", parts[0])
    if len(parts) in (2, 3) and all(parts) and parts[0] in _OSES:
        return Platform(*parts)
    raise ApiError(400, f'"{text}": unknown operating system or architecture: invalid argument')


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
    info = engine.images.get(name).inspect()
    info["VirtualSize"] = info["Size"]
    return json_response(inspection.complete(info, inspection.IMAGE))


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
    """POST /images/load: `docker load`, from the request body as it streams in. Like dockerd,
    a 200 whose JSON lines (chunked, one per loaded tag) end with the error if one occurred:
    clients raise their load error from it."""
    lines, error = [], None
    try:
        for line in archive.load(engine.images, request.body_stream()):
            engine.events.publish("image", "load", line.rpartition(" ")[2])
            lines.append({"stream": line + "\n"})
    except AgentError as e:
        error = {"errorDetail": {"message": str(e)}, "error": str(e)}
    messages = [*lines, *([error] if error else [])]
    return Response(200, stream=(json.dumps(m).encode() + b"\n" for m in messages))
