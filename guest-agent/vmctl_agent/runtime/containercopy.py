"""`docker cp`'s three questions to a container, each answered by a helper in its root
(rootview.py): a path's stat (HEAD), the path as a tar (GET), a tar unpacked at a path (PUT).
Running or stopped alike; its volumes and binds included, as dockerd includes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from vmctl_agent.runtime import pathcopy, pathextract, rootview
from vmctl_agent.runtime.index import Container

_CHUNK = 1 << 16


def stat(runtime, container: Container, path: str) -> dict:
    """dockerd's ContainerPathStat of `path` in the container."""
    work = lambda data, say: pathcopy.path_stat(path)  # noqa: E731
    with rootview.entered(runtime, container, work) as helper:
        return helper.answer()


def archive(runtime, container: Container, path: str) -> tuple[dict, ArchiveStream]:
    """The path's stat, and the tar of it as it streams (the helper ends with the stream)."""
    skip = pathcopy.RUNTIME_MOUNTS if container.state.running else ()

    def work(data, say) -> None:
        say(pathcopy.path_stat(path))
        with data.makefile("wb", buffering=_CHUNK) as out:
            pathcopy.write_archive(path, out, skip)

    stack = contextlib.ExitStack()
    helper = stack.enter_context(rootview.entered(runtime, container, work))
    try:
        found = helper.answer()
    except BaseException:
        stack.close()
        raise
    return found, ArchiveStream(stack, helper)


class ArchiveStream:
    """The tar as the helper sends it. Read to its end, or closed (the client left, or the
    answer never started), the helper is reaped and the container's lock let go."""

    def __init__(self, stack: contextlib.ExitStack, helper: rootview.Helper) -> None:
        self._stack, self._helper = stack, helper

    def __iter__(self) -> Iterator[bytes]:
        try:
            while chunk := self._helper.data.recv(_CHUNK):
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        self._stack.close()


def extract(runtime, container: Container, path: str, tar_fd: int, *, no_overwrite: bool,
            copy_owner: bool) -> None:  # fmt: skip
    """Unpack the (plain, seekable) tar on `tar_fd` at `path`, a directory in the container."""
    options = pathextract.ExtractOptions(no_overwrite, _owner(container) if copy_owner else None)
    work = lambda data, say: pathextract.extract(path, tar_fd, options)  # noqa: E731
    with rootview.entered(runtime, container, work) as helper:
        helper.answer()


def _owner(container: Container) -> tuple[int, int] | None:
    """copyUIDGID: the container's user owns what is copied in; with no user (root), the
    archive's owners stay, as in dockerd."""
    user = container.config.process_spec.user
    return None if (user.uid, user.gid) == (0, 0) else (user.uid, user.gid)
