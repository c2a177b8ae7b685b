"""`docker push`: a local image's layers, config and manifest to its registry, as dockerd
pushes them, with dockerd's progress messages.

    for each layer, five at a time:  HEAD the blob           -> "Layer already exists"
                                     a mount from a repository of the same registry the
                                     image came from (cross-repository) -> "Mounted from R"
                                     else an upload: POST, PATCH chunks with Content-Range
                                     (Pushing progress), PUT ?digest=  -> "Pushed"
    the config blob (HEAD, or one monolithic POST + PUT), then the manifest (Docker's schema 2)
    -> "TAG: digest: sha256:... size: N", and an `aux` message with them

The token asked for covers pull and push on the repository (and pull on those mounted from).
Mirrors are never pushed to: a push goes to the registry the name names.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vmctl_agent.errors import (
    AuthenticationError,
    ImageNotFound,
    RegistryError,
    RegistryUnreachable,
)
from vmctl_agent.store import manifest as mf
from vmctl_agent.store import progress as pg
from vmctl_agent.store import reference as refs
from vmctl_agent.store.images import Image, ImageRecord, ImageStore
from vmctl_agent.store.registry import RegistryClient, RepositorySession, registry_error

CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
PLAIN_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
CHUNK = 16 << 20  # PATCH size: progress is reported between chunks
UPLOADS = 5  # dockerd's max-concurrent-uploads
_OCTETS = "application/octet-stream"


@dataclass(frozen=True)
class PushedLayer:
    """One layer as the manifest names it: its blob, and where the image said it came from."""

    digest: str
    diff_id: str
    size: int
    media_type: str


class Pusher:
    """Pushes images from `store` through `client` (its credentials: X-Registry-Auth's)."""

    def __init__(self, store: ImageStore, client: RegistryClient) -> None:
        self.store, self.client = store, client

    def push(self, name: str, emit: pg.Progress) -> str:
        """Push `name` (a full reference with a tag); its manifest's digest."""
        ref = refs.parse(name)
        image = self._local(ref)
        emit({"status": f"The push refers to repository [{ref.name}]"})
        session = self._session(ref, image)
        layers = [_layer(self.store, entry) for entry in image.record.layers]
        for layer in reversed(layers):
            emit(_status("Preparing", layer))
        self._layers(session, image, layers, emit)
        self._blob(session, image.id, self.store.content.blob_path(image.id))
        body = manifest_bytes(image.id, self.store.content.blob_path(image.id), layers)
        digest = self._manifest(session, ref, body)
        emit({"status": f"{ref.tag}: digest: {digest} size: {len(body)}"})
        emit({"progressDetail": {}, "aux": {"Tag": ref.tag, "Digest": digest, "Size": len(body)}})
        self._remember(image.record, ref, digest)
        return digest

    def _local(self, ref: refs.Reference) -> Image:
        try:
            return self.store.get(str(ref))
        except ImageNotFound:  # in dockerd's words
            raise PushError(
                f"An image does not exist locally with the tag: {ref.familiar_name}", 404
            ) from None

    def _session(self, ref: refs.Reference, image: Image) -> RepositorySession:
        """The first endpoint that answers (HTTPS, then HTTP for an insecure registry)."""
        scope = " ".join([f"repository:{ref.path}:pull,push", *_mount_scopes(image, ref)])
        endpoints = [e for e in self.client.config.endpoints(ref.domain) if not e.mirror]
        for i, endpoint in enumerate(endpoints):
            session = RepositorySession(self.client, endpoint, ref, scope=scope)
            try:
                with session.request("GET", f"{endpoint.url}/v2/") as response:
                    response.read()
                    _check_access(response.status)
                return session
            except RegistryUnreachable:
                if i == len(endpoints) - 1 or endpoint.verify_tls:
                    raise
        raise RegistryUnreachable(f"no endpoint for {ref.domain}")

    def _layers(self, session, image: Image, layers: list[PushedLayer], emit) -> None:
        sources = _mount_sources(image, session.reference)
        lock = threading.Lock()

        def locked(message: dict) -> None:
            with lock:
                emit(message)

        def one(layer: PushedLayer) -> None:
            self._layer(session, layer, sources, locked)

        with ThreadPoolExecutor(max_workers=UPLOADS) as pool:
            for done in [pool.submit(one, layer) for layer in layers]:
                done.result()

    def _layer(self, session, layer: PushedLayer, sources: list[str], emit) -> None:
        if blob_exists(session, layer.digest):
            emit(_status("Layer already exists", layer))
            return
        location = ""
        for source in sources:
            mounted, location = start_upload(session, layer.digest, source)
            if mounted:
                emit(_status(f"Mounted from {source}", layer))
                return
        location = location or start_upload(session)[1]
        path = self.store.content.blob_path(layer.digest)
        total = os.path.getsize(path)
        report = lambda sent: emit(_status("Pushing", layer, sent, total))  # noqa: E731
        upload_chunks(session, location, path, layer.digest, report)
        emit(_status("Pushed", layer))

    def _blob(self, session, digest: str, path) -> None:
        """A small blob (the config) in one monolithic PUT, unless the registry has it."""
        if blob_exists(session, digest):
            return
        location = start_upload(session)[1]
        with open(path, "rb") as body:
            _finish(session, location, digest, body.read())

    def _manifest(self, session, ref: refs.Reference, body: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        headers = {"Content-Type": mf.DOCKER_MANIFEST}
        with session.request("PUT", f"manifests/{ref.tag}", headers, body) as response:
            answer = response.read()
            _expect(response.status, (201, 200), answer, f"manifest {ref.familiar()}", ref)
        return digest

    def _remember(self, record: ImageRecord, ref: refs.Reference, digest: str) -> None:
        """The pushed manifest's digest joins the image's RepoDigests, as in dockerd."""
        pushed = str(ref.with_digest(digest))
        if pushed not in record.repo_digests:
            record.repo_digests = [*record.repo_digests, pushed]
            self.store.add(record, None)


class PushError(RegistryError):
    """A push refused before or while talking to the registry; `status` for the API."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.status = status


# -- the distribution API's calls ------------------------------------------------------------


def blob_exists(session: RepositorySession, digest: str) -> bool:
    with session.request("HEAD", f"blobs/{digest}") as response:
        response.read()
        if response.status in (401, 403):
            _check_access(response.status)
        return response.status == 200


def start_upload(
    session: RepositorySession, digest: str = "", source: str = ""
) -> tuple[bool, str]:
    """POST an upload (a mount of `digest` from `source` if given): (mounted, Location)."""
    query = f"?mount={digest}&from={source}" if source else ""
    with session.request("POST", f"blobs/uploads/{query}", {"Content-Length": "0"}) as response:
        body = response.read()
        if response.status == 201 and source:
            return True, ""
        _expect(response.status, (202,), body, "blob upload", session.reference)
        return False, response.headers.get("Location", "")


def upload_chunks(session, location: str, path, digest: str, report, chunk_size=CHUNK) -> None:
    """PATCH the blob in pieces (each with its Content-Range), then PUT ?digest=."""
    sent = 0
    with open(path, "rb") as blob:
        while chunk := blob.read(chunk_size):
            headers = {
                "Content-Type": _OCTETS,
                "Content-Length": str(len(chunk)),
                "Content-Range": f"{sent}-{sent + len(chunk) - 1}",
            }
            with session.request("PATCH", location, headers, chunk) as response:
                body = response.read()
                _expect(response.status, (202,), body, f"blob {digest}", session.reference)
                location = response.headers.get("Location", location)
            sent += len(chunk)
            report(sent)
    _finish(session, location, digest, b"")


def _finish(session, location: str, digest: str, body: bytes) -> None:
    separator = "&" if "?" in location else "?"
    headers = {"Content-Type": _OCTETS, "Content-Length": str(len(body))}
    url = f"{location}{separator}digest={digest}"
    with session.request("PUT", url, headers, body) as response:
        answer = response.read()
        _expect(response.status, (201, 204), answer, f"blob {digest}", session.reference)


def _expect(status: int, wanted: tuple[int, ...], body: bytes, what: str, ref) -> None:
    if status in wanted:
        return
    _check_access(status)
    code, message = registry_error(body)
    raise RegistryError(f"{what}: the registry answered {status}: {code or message or '?'}")


def _check_access(status: int) -> None:
    if status in (401, 403):
        raise AuthenticationError("denied: requested access to the resource is denied")


# -- what is pushed -------------------------------------------------------------------------


def manifest_bytes(config_digest: str, config_path, layers: list[PushedLayer]) -> bytes:
    """Docker's image manifest, schema 2, indented as dockerd writes it."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": mf.DOCKER_MANIFEST,
        "config": {
            "mediaType": CONFIG_TYPE,
            "size": os.path.getsize(config_path),
            "digest": config_digest,
        },
        "layers": [
            {"mediaType": layer.media_type, "size": layer.size, "digest": layer.digest}
            for layer in layers
        ],
    }
    return json.dumps(manifest, indent=3).encode()


def _layer(store: ImageStore, entry: dict) -> PushedLayer:
    path = store.content.blob_path(entry["digest"])
    if not path.exists():
        raise PushError(f"layer {entry['digest']} has no stored blob to push: pull it again")
    plain = entry.get("media_type", "").endswith(".tar")
    media_type = PLAIN_LAYER if plain else GZIP_LAYER
    return PushedLayer(entry["digest"], entry["diff_id"], path.stat().st_size, media_type)


def _mount_sources(image: Image, ref: refs.Reference) -> list[str]:
    """Repositories of the same registry this image came from (its RepoDigests)."""
    found = []
    for text in image.record.repo_digests:
        other = refs.parse(text)
        if other.domain == ref.domain and other.path != ref.path and other.path not in found:
            found.append(other.path)
    return found


def _mount_scopes(image: Image, ref: refs.Reference) -> list[str]:
    return [f"repository:{path}:pull" for path in _mount_sources(image, ref)]


def _status(status: str, layer: PushedLayer, current: int = -1, total: int = 0) -> dict:
    message = {"status": status, "progressDetail": {}, "id": pg.short(layer.diff_id)}
    if current >= 0:
        message = pg.message(status, pg.short(layer.diff_id), current, total)
    return message
