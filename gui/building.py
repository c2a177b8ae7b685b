"""Builds as the app makes them: the request's query (every tag as its own `t`, as the docker
CLI sends them), the context as docker-py packs it (.dockerignore honoured), and `BuildLog`,
which reads the engine's messages into text and, when a step fails, names that step."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from vmctl_gui.engine import BuildRequest

STEP = re.compile(r"^Step \d+/\d+ : .*")


def build_params(request: BuildRequest) -> dict[str, object]:
    """POST /build's query: the engine honours or refuses each field (never drops one)."""
    params: dict[str, object] = {"dockerfile": request.dockerfile, "rm": "1"}
    if request.tags:
        params["t"] = list(request.tags)  # repeated, as the docker CLI sends several -t
    if request.args:
        params["buildargs"] = json.dumps(dict(request.args))
    return params


def build_context(request: BuildRequest):
    """The folder as a tar file object, without what its .dockerignore excludes."""
    from docker import utils
    from docker.api.build import process_dockerfile

    ignore = os.path.join(request.context, ".dockerignore")
    exclude = None
    if os.path.exists(ignore):
        with open(ignore) as f:
            exclude = [line.strip() for line in f if line.strip() and line.strip()[0] != "#"]
    dockerfile = process_dockerfile(request.dockerfile, request.context)
    return utils.tar(request.context, exclude=exclude, dockerfile=dockerfile)


@dataclass
class BuildLog:
    """The build's output as it streams: `add(message)` returns the text to show."""

    step: str = ""  # the step running now ("Step 2/3 : RUN make")
    image: str = ""  # the built image's id, once the engine says it
    error: str = ""
    lines: list[str] = field(default_factory=list)

    def add(self, message: dict) -> str:
        if "error" in message or "errorDetail" in message:
            detail = message.get("errorDetail") or {}
            self.error = str(detail.get("message") or message.get("error") or "").strip()
            return f"ERROR: {self.error}\n"
        if (self.image == "") and (message.get("aux") or {}).get("ID"):
            self.image = message["aux"]["ID"]
        text = str(message.get("stream") or message.get("status") or "")
        for line in text.splitlines():
            if STEP.match(line):
                self.step = line
        return text

    @property
    def failure(self) -> str:
        """The failing step and the engine's words, or "" while nothing failed."""
        if not self.error:
            return ""
        return f"{self.step} failed: {self.error}" if self.step else self.error
