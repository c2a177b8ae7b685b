"""Errors in words that say what to do next: the one place the GUI turns exceptions into text.

vmctl's own errors already say it (VmctlError). Foreign ones are translated here: docker-py's
API errors carry the engine's message; a refused or missing socket means the engine is not up.
"""

from __future__ import annotations

START_HINT = "Start the VM (Engine tab, or the tray's Start), then try again."


def describe(error: BaseException) -> str:
    """One or two sentences for the error banner."""
    try:
        import docker.errors
        import requests.exceptions
    except ImportError:  # pragma: no cover - both are dependencies
        return str(error) or type(error).__name__
    if isinstance(error, docker.errors.ImageNotFound):
        return f"{_explanation(error)}. Check the image name, or pull it first."
    if isinstance(error, docker.errors.NotFound):
        return f"{_explanation(error)}. It may have been removed: the list refreshes."
    if isinstance(error, docker.errors.APIError):
        return _explanation(error)
    if isinstance(error, requests.exceptions.ConnectionError | ConnectionError | FileNotFoundError):
        return f"The engine does not answer. {START_HINT}"
    if isinstance(error, requests.exceptions.Timeout | TimeoutError):
        return "The engine did not answer in time. Its VM may be busy; try again in a moment."
    text = str(error).strip() or type(error).__name__
    return text


def _explanation(error) -> str:
    text = getattr(error, "explanation", None) or str(error)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text).strip().rstrip(".")
