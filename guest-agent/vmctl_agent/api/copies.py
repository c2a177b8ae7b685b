"""`docker cp`: HEAD, GET and PUT /containers/{id}/archive, running or stopped containers
alike, with dockerd's X-Docker-Container-Path-Stat header, answers and events. The work is
done inside the container's root by the runtime (containercopy.py); an upload is spooled
first (decompressed), so it can be checked whole before anything is written.
"""

from __future__ import annotations

import base64
import json
import lzma
import os

from vmctl_agent.api import events
from vmctl_agent.api.http import ApiError, Response, empty
from vmctl_agent.build import context
from vmctl_agent.runtime import containercopy
from vmctl_agent.runtime.rootview import RootViewError

STAT_HEADER = "X-Docker-Container-Path-Stat"
_STATUS = {"missing": 404, "invalid": 400, "failed": 500}


def head(engine, request, id: str) -> Response:
    """HEAD: the path's stat, in the header only."""
    container, path = _target(engine, request, id)
    with _answers(path, id):
        found = containercopy.stat(engine.runtime, container, path)
    return Response(200, b"", headers={STAT_HEADER: stat_header(found)})


def get(engine, request, id: str) -> Response:
    """GET: the path as a tar (its names rebased to the path's last element)."""
    container, path = _target(engine, request, id)
    with _answers(path, id):
        found, chunks = containercopy.archive(engine.runtime, container, path)
    events.container_event(engine, "archive-path", container.id, container)
    headers = {STAT_HEADER: stat_header(found)}
    return Response(200, content_type="application/x-tar", headers=headers, stream=chunks)


def put(engine, request, id: str) -> Response:
    """PUT: the body (a tar, plain or compressed) unpacked in the directory `path`."""
    container, path = _target(engine, request, id)
    spooled = engine.images.content.tmp / f"cp-{os.urandom(6).hex()}.tar"
    try:
        _spool(request, spooled)
        with open(spooled, "rb") as tar, _answers(path, id):
            containercopy.extract(
                engine.runtime, container, path, tar.fileno(),
                no_overwrite=request.flag("noOverwriteDirNonDir"),
                copy_owner=request.flag("copyUIDGID"),
            )  # fmt: skip
    finally:
        spooled.unlink(missing_ok=True)
        spooled.with_suffix(".raw").unlink(missing_ok=True)
    events.container_event(engine, "extract-to-dir", container.id, container)
    return empty(200)


def stat_header(found: dict) -> str:
    """The stat as dockerd sends it: JSON, base64-encoded."""
    return base64.b64encode(json.dumps(found, separators=(",", ":")).encode()).decode()


def _target(engine, request, id: str):
    path = request.arg("path")
    if not path:
        raise ApiError(400, "bad parameter: 'path' cannot be empty")
    return engine.runtime.get(id), path


def _spool(request, spooled) -> None:
    try:
        context.spool_tar(request.body_stream(), spooled)
    except (EOFError, lzma.LZMAError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # our disk, not their archive
        raise ApiError(400, f"the archive is not a readable tar: {e}") from None


class _answers:
    """The helper's errors in dockerd's words and statuses."""

    def __init__(self, path: str, ref: str) -> None:
        self.path, self.ref = path, ref

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, trace) -> None:
        if not isinstance(error, RootViewError):
            return
        if error.kind == "missing":
            message = f"Could not find the file {self.path} in container {self.ref}"
        else:
            message = str(error)
        raise ApiError(_STATUS[error.kind], message) from None
