"""Errors in words that say what to do next: the one place the GUI turns exceptions into text.

vmctl's own errors already say it (VmctlError). Foreign ones are translated here: docker-py's
API errors carry the engine's message; a refused or missing socket means the engine is not up.
"""

from __future__ import annotations

import sys

START_HINT = "Start the VM (Engine tab, or the tray's Start), then try again."


def describe(error: BaseException) -> str:
    """One or two sentences for the error banner."""
    docker_errors = _loaded("docker.errors", error)
    requests_errors = _loaded("requests.exceptions", error)
    if docker_errors is not None:
        if isinstance(error, docker_errors.ImageNotFound):
            return f"{_explanation(error)}. Check the image name, or pull it first."
        if isinstance(error, docker_errors.NotFound):
            return f"{_explanation(error)}. It may have been removed: the list refreshes."
        if isinstance(error, docker_errors.APIError):
            return _explanation(error)
    if isinstance(error, ConnectionError | FileNotFoundError) or (
        requests_errors is not None and isinstance(error, requests_errors.ConnectionError)
    ):
        return f"The engine does not answer. {START_HINT}"
    if isinstance(error, TimeoutError) or (
        requests_errors is not None and isinstance(error, requests_errors.Timeout)
    ):
        return "The engine did not answer in time. Its VM may be busy; try again in a moment."
    return str(error).strip() or type(error).__name__


def _loaded(module: str, error: BaseException):
    """`module` when `error` is one of its own (so it is loaded whole): never imported here,
    as this runs on the UI thread while a worker may be importing docker-py."""
    owners = {c.__module__ for c in type(error).__mro__}
    return sys.modules.get(module) if module in owners else None


def _explanation(error) -> str:
    text = getattr(error, "explanation", None) or str(error)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text).strip().rstrip(".")
