"""GET /vmctl/containers/{id}/inside, the vendor endpoint behind the desktop app's Inside view,
and GET /containers/{id}/changes (`docker diff`), which shares its reading of the layers.

The Engine API has no call for what a container is made of, so this one says it in one
answer: the container's namespaces beside the agent's, its cgroup's limits and usage, and its
root filesystem as a stack (the image's layers base to top, each with the history line that
made it, then the container's writable layer and its changes). The docker CLI never calls it.
"""

from __future__ import annotations

import os
from pathlib import Path

from vmctl_agent.api.http import Response, json_response
from vmctl_agent.errors import CgroupError, ImageNotFound
from vmctl_agent.runtime import inside as facts
from vmctl_agent.runtime.index import Container
from vmctl_agent.store.content import tree_size


def inside(engine, request, id: str) -> Response:
    container = engine.runtime.get(id)
    return json_response(
        {
            "Id": container.id,
            "Name": "/" + container.name,
            "Agent": {"Pid": os.getpid()},
            **_process(engine, container),
            "RootFS": {
                "Layers": image_layers(engine, container),
                "Writable": facts.writable_layer(container),
            },
        }
    )


def changes(engine, request, id: str) -> Response:
    container = engine.runtime.get(id)
    return json_response(facts.changes(container.directory / "upper", facts.lower(container)))


def _process(engine, container: Container) -> dict:
    """Namespaces and cgroup of a running container; a container that ends while they are
    read (its /proc entry or its cgroup gone) is reported as not running, as it now is."""
    if container.state.running:
        try:
            return {
                "Running": True,
                "Pid": container.state.pid,
                "Namespaces": facts.namespaces(container.state.pid),
                "Cgroup": facts.cgroup(engine.runtime.cgroups, container.id),
            }
        except (FileNotFoundError, ProcessLookupError, CgroupError):
            pass
    return {"Running": False, "Pid": 0, "Namespaces": [], "Cgroup": None}


def image_layers(engine, container: Container) -> list[dict]:
    """The image's layers, base first, each beside the history entry that made it (history
    entries marked empty_layer, like ENV or CMD, made none)."""
    try:
        image = engine.images.get(container.config.image_id)
    except ImageNotFound:  # removed under the container (rmi -f): its layers remain
        return [_layer(_orphan(path), {}, path) for path in reversed(container.config.layers)]
    history = [h for h in image.config.get("history") or [] if not h.get("empty_layer")]
    paths = list(reversed(container.config.layers))
    return [
        _layer(entry, history[i] if i < len(history) else {}, paths[i] if i < len(paths) else "")
        for i, entry in enumerate(image.record.layers)
    ]


def _orphan(path: str) -> dict:
    """What a layer's directory tells without its image: the store names it by its diff_id
    (<layers>/<hex>/diff), and its size is what it holds."""
    directory = Path(path)
    return {"diff_id": f"sha256:{directory.parent.name}", "size": tree_size(directory)}


def _layer(entry: dict, history: dict, path: str) -> dict:
    return {
        "Digest": entry.get("digest", ""),
        "DiffID": entry.get("diff_id", ""),
        "Size": int(entry.get("size", 0)),
        "Path": path,
        "CreatedBy": history.get("created_by", ""),
        "Created": history.get("created", ""),
        "Comment": history.get("comment", ""),
    }
