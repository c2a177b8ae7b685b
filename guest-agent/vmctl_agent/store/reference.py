"""Image references, parsed and normalised the way Docker does.

`hello-world` -> `docker.io/library/hello-world:latest`; `host:5000/ns/repo:tag`;
`repo@sha256:...`. Stored names are always the full form; users see the familiar one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmctl_agent.errors import InvalidReference

DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_DOMAINS = ("index.docker.io", "registry-1.docker.io")

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(
    rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?"
)
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_SHA256 = re.compile(r"sha256:[a-f0-9]{64}")
_HEX64 = re.compile(r"[a-f0-9]{64}")
_NAME_MAX = 255


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: domain, repository path, and a tag and/or digest."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The full repository name, e.g. `docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_name(self) -> str:
        """The repository name as `docker` prints it, e.g. `busybox` or `host:5000/repo`."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        return self.path.removeprefix("library/")

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, None, digest)

    def familiar(self) -> str:
        """What `docker images` shows: `busybox:latest`, `repo@sha256:...`."""
        return self.familiar_name + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise `text`; without tag or digest, `latest` is implied."""
    if not text or text != text.strip():
        raise InvalidReference(f"invalid reference format: {text!r}")
    if _HEX64.fullmatch(text):
        raise InvalidReference(
            f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        )
    rest, digest = _split_digest(text)
    rest, tag = _split_tag(rest)
    domain, path = _split_domain(rest)
    _check_path(text, path)
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def is_image_id(text: str) -> bool:
    """True for `sha256:<64 hex>` or a bare 64-hex id."""
    return bool(_SHA256.fullmatch(text) or _HEX64.fullmatch(text))


def _split_digest(text: str) -> tuple[str, str | None]:
    name, sep, digest = text.partition("@")
    if not sep:
        return text, None
    if not _DIGEST.fullmatch(digest):
        raise InvalidReference(f"invalid reference format: bad digest in {text!r}")
    if digest.startswith("sha256:") and not _SHA256.fullmatch(digest):
        raise InvalidReference(f"invalid checksum digest format in {text!r}")
    return name, digest


def _split_tag(text: str) -> tuple[str, str | None]:
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon <= slash:
        return text, None
    tag = text[colon + 1 :]
    if not _TAG.fullmatch(tag):
        raise InvalidReference(f"invalid reference format: bad tag {tag!r}")
    return text[:colon], tag


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    looks_like_domain = any(c in first for c in ".:") or first == "localhost"
    if not sep or not looks_like_domain:
        domain, path = DEFAULT_DOMAIN, name
    else:
        if not _DOMAIN.fullmatch(first):
            raise InvalidReference(f"invalid reference format: bad registry host {first!r}")
        domain, path = first, remainder
    if domain in _LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    return domain, path


def _check_path(text: str, path: str) -> None:
    if path.lower() != path:
        raise InvalidReference(
            f"invalid reference format: repository name ({path}) must be lowercase"
        )
    if not all(_PATH_COMPONENT.fullmatch(part) for part in path.split("/")):
        raise InvalidReference(f"invalid reference format: {text!r}")
    if len(path) > _NAME_MAX:
        raise InvalidReference(
            f"invalid reference format: repository name longer than {_NAME_MAX} characters"
        )
