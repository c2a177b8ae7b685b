"""Manifests and indexes, Docker's and OCI's: parse them, and pick the platform we run.

Attestation entries (platform unknown/unknown) are never chosen; schema1 is refused with a
message saying what to do, since it carries no content-addressed config.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from vmctl_agent.errors import PlatformNotFound, UnsupportedManifest, VerificationError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
)
IMAGE_MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_LIST, OCI_INDEX)
ACCEPT = ", ".join((DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX, *SCHEMA1))

_GO_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(*parts)

    @classmethod
    def native(cls) -> Platform:
        """The platform of this machine, in Go's names (`uname -m` x86_64 -> amd64)."""
        machine = os.uname().machine
        return cls("linux", _GO_ARCH.get(machine, machine))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict | None = None

    @classmethod
    def from_json(cls, data: dict) -> Descriptor:
        try:
            digest, size = str(data["digest"]), int(data["size"])
        except (KeyError, TypeError, ValueError) as e:
            raise UnsupportedManifest(f"malformed descriptor in manifest: {data!r:.200}") from e
        if size < 0 or not digest.startswith("sha256:") or len(digest) != 71:
            raise UnsupportedManifest(f"unsupported descriptor digest {digest!r:.80}")
        plat = data.get("platform")
        platform = None
        if isinstance(plat, dict):
            platform = Platform(
                plat.get("os", ""), plat.get("architecture", ""), plat.get("variant")
            )
        return cls(str(data.get("mediaType", "")), digest, size, platform, data.get("annotations"))


@dataclass(frozen=True)
class Fetched:
    """Manifest bytes as the registry sent them, with their media type and verified digest."""

    body: bytes
    media_type: str
    digest: str


@dataclass(frozen=True)
class ImageManifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]


def media_type_of(body: bytes, header: str) -> str:
    """The manifest's own mediaType wins over a generic Content-Type header."""
    try:
        declared = json.loads(body).get("mediaType")
    except (ValueError, AttributeError):
        declared = None
    if isinstance(declared, str) and declared:
        return declared
    return header


def load(fetched: Fetched) -> dict:
    try:
        data = json.loads(fetched.body)
    except ValueError as e:
        raise UnsupportedManifest(f"manifest {fetched.digest} is not valid JSON") from e
    if not isinstance(data, dict):
        raise UnsupportedManifest(f"manifest {fetched.digest} is not a JSON object")
    return data


def kind(fetched: Fetched, data: dict) -> str:
    """'index' or 'image'; refuses schema1 and anything unknown."""
    media_type = fetched.media_type
    if media_type in SCHEMA1 or data.get("schemaVersion") == 1:
        raise UnsupportedManifest(
            "schema 1 manifests are not supported (the image was pushed with a Docker older than "
            "1.10); re-push it with a current docker or skopeo to convert it to schema 2"
        )
    if media_type in INDEXES or (not media_type and "manifests" in data):
        return "index"
    if media_type in IMAGE_MANIFESTS or (not media_type and "config" in data):
        return "image"
    raise UnsupportedManifest(f"unsupported manifest media type {media_type!r}")


def parse_image(data: dict) -> ImageManifest:
    try:
        config = Descriptor.from_json(data["config"])
        layers = tuple(Descriptor.from_json(layer) for layer in data["layers"])
    except (KeyError, TypeError) as e:
        raise UnsupportedManifest("image manifest lacks its config or layers") from e
    return ImageManifest(config, layers)


def select(data: dict, want: Platform) -> Descriptor:
    """The index entry for `want`; the error names the platforms that are offered."""
    entries = [Descriptor.from_json(d) for d in data.get("manifests") or []]
    candidates = [d for d in entries if d.platform and not _is_attestation(d)]
    matches = [d for d in candidates if _matches(d.platform, want)]
    if matches:
        return min(matches, key=lambda d: _variant_rank(d.platform, want))
    offered = ", ".join(sorted({str(d.platform) for d in candidates})) or "none"
    raise PlatformNotFound(
        f"no matching manifest for {want} in the manifest list entries (offered: {offered})"
    )


def _is_attestation(d: Descriptor) -> bool:
    annotations = d.annotations or {}
    if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
        return True
    return d.platform is not None and d.platform.os == "unknown"


def _matches(have: Platform, want: Platform) -> bool:
    if (have.os, have.architecture) != (want.os, want.architecture):
        return False
    return want.variant is None or have.variant in (None, want.variant)


def _variant_rank(have: Platform, want: Platform) -> int:
    return 0 if have.variant == want.variant else 1


def parse_config(body: bytes, digest: str, layer_count: int) -> dict:
    """The image config, checked to name exactly one diff_id per layer."""
    try:
        config = json.loads(body)
        diff_ids = config["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError) as e:
        raise VerificationError(f"image config {digest} is malformed: no rootfs.diff_ids") from e
    if not isinstance(diff_ids, list) or len(diff_ids) != layer_count:
        raise VerificationError(
            f"image config {digest} lists {len(diff_ids)} diff_ids for {layer_count} layers"
        )
    return config
