"""`docker pull`: resolve the reference, pick linux/amd64, fetch and verify everything, unpack
layers in parallel, then record the image.

Each layer is streamed once: network -> sha256 + blob file -> gunzip -> sha256 -> tar extractor.
The blob and the unpacked layer become visible only after both digests check out. Pulls of the
same image, in threads or processes, share the work through per-layer locks.
"""

from __future__ import annotations

import errno
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass

from vmctl_agent import atomic
from vmctl_agent.errors import (
    AgentError,
    PlatformNotFound,
    StoreError,
    UnsupportedManifest,
    VerificationError,
)
from vmctl_agent.store import manifest as mf
from vmctl_agent.store import progress as pg
from vmctl_agent.store import reference as refs
from vmctl_agent.store.blobstream import BlobStream, Cancelled
from vmctl_agent.store.images import ImageRecord, ImageStore
from vmctl_agent.store.layers import LayerExtractor
from vmctl_agent.store.registry import RegistryClient, RepositorySession

MAX_CONCURRENT_DOWNLOADS = 3
_LAYER_TYPES = (
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
)


@dataclass(frozen=True)
class LayerJob:
    descriptor: mf.Descriptor
    diff_id: str


class Puller:
    """Pulls images from registries into an ImageStore."""

    def __init__(
        self,
        store: ImageStore,
        client: RegistryClient,
        platform: mf.Platform | None = None,
        max_concurrent: int = MAX_CONCURRENT_DOWNLOADS,
    ) -> None:
        self.store = store
        self.client = client
        self.platform = platform or mf.Platform.native()
        self.explicit = platform is not None  # asked for: a single-platform image must match
        self.max_concurrent = max_concurrent

    def pull(self, name: str, progress: pg.Progress | None = None) -> ImageRecord:
        """Pull `name`; progress gets Docker's JSON messages. Raises AgentError subclasses."""
        ref = refs.parse(name)
        emit = _serialised(progress or (lambda m: None))
        self.store.collect_garbage(wait=False)  # sync the last pulls, drop torn leftovers
        try:
            with self.store.content.gc_lock(shared=True):
                session, fetched = self.client.resolve(ref)
                emit(pg.message(f"Pulling from {ref.path}", ref.tag or ref.digest))
                record, fresh = self._pull_resolved(session, fetched, ref, emit)
        except BaseException:
            self.store.collect_garbage(wait=False)  # layers this failed pull left unrecorded
            raise
        emit(pg.message(f"Digest: {fetched.digest}"))
        verb = "Downloaded newer image" if fresh else "Image is up to date"
        emit(pg.message(f"Status: {verb} for {ref.familiar()}"))
        return record

    def _pull_resolved(self, session, fetched: mf.Fetched, ref, emit) -> tuple[ImageRecord, bool]:
        top = fetched
        data = mf.load(fetched)
        if mf.kind(fetched, data) == "index":
            chosen = mf.select(data, self.platform)
            fetched = session.fetch_manifest(chosen.digest)
            data = mf.load(fetched)
            if mf.kind(fetched, data) != "image":
                raise UnsupportedManifest(f"index entry {chosen.digest} is not an image manifest")
        image = mf.parse_image(data)
        config = self._config(session, image)
        if self.explicit and top is fetched:
            _check_platform(ref, config, self.platform)
        jobs = [
            LayerJob(d, diff)
            for d, diff in zip(image.layers, config["rootfs"]["diff_ids"], strict=True)
        ]
        _check_layer_types(jobs)
        if not self._complete(image, jobs):
            self._fetch_layers(session, jobs, emit)
        for blob in {top.digest: top, fetched.digest: fetched}.values():
            self.store.content.put_blob(blob.digest, blob.body)
        record = ImageRecord(
            id=image.config.digest,
            manifest_digest=fetched.digest,
            layers=[_layer_entry(job, self.store) for job in jobs],
            repo_digests=[str(ref.with_digest(top.digest))],
            created=str(config.get("created", "")),
            pulled=time.time(),
            boot_id=atomic.boot_id(),  # until add() has synced its layers
        )
        had_image = self.store.exists(record.id)
        moved = self.store.add(record, ref.with_tag(ref.tag) if ref.tag else None)
        return record, moved or not had_image

    def _complete(self, image: mf.ImageManifest, jobs: list[LayerJob]) -> bool:
        """The image is already here, every layer and blob of it: nothing to download."""
        content = self.store.content
        return self.store.exists(image.config.digest) and all(
            content.has_layer(j.diff_id) and content.has_blob(j.descriptor.digest) for j in jobs
        )

    def _config(self, session: RepositorySession, image: mf.ImageManifest) -> dict:
        digest = image.config.digest
        if self.store.content.has_blob(digest):
            body = self.store.content.read_blob(digest)
        else:
            with session.open_blob(digest) as response:
                body = response.read(image.config.size + 1)
            if len(body) != image.config.size:
                raise VerificationError(f"image config {digest} is not {image.config.size} bytes")
            self.store.content.put_blob(digest, body)
        return mf.parse_config(body, digest, len(image.layers))

    def _fetch_layers(self, session, jobs: list[LayerJob], emit) -> None:
        for job in jobs:
            emit(pg.message("Pulling fs layer", pg.short(job.descriptor.digest)))
        cancel = threading.Event()
        workers = max(1, min(self.max_concurrent, len(jobs)))
        with ThreadPoolExecutor(workers, thread_name_prefix="layer") as pool:
            futures = [pool.submit(self._layer, session, j, emit, cancel) for j in jobs]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                cancel.set()
                wait(futures)
                raise _first_error(futures)

    def _layer(self, session, job: LayerJob, emit, cancel: threading.Event) -> None:
        content = self.store.content
        layer_id = pg.short(job.descriptor.digest)
        with content.lock(job.diff_id):
            if content.has_layer(job.diff_id) and content.has_blob(job.descriptor.digest):
                emit(pg.message("Already exists", layer_id))
                return
            with content.staging(job.diff_id) as work:
                self._download(session, job, work, emit, cancel)
        emit(pg.message("Pull complete", layer_id))

    def _download(self, session, job: LayerJob, work, emit, cancel) -> None:
        desc = job.descriptor
        layer_id = pg.short(desc.digest)
        (work / "diff").mkdir()
        meter = pg.Throttled(emit, "Downloading", layer_id, desc.size)
        with session.open_blob(desc.digest) as response, open(work / "blob", "wb") as sink:
            stream = BlobStream(response, sink, desc.size, meter, cancel)
            try:
                LayerExtractor(str(work / "diff")).extract(stream)
                digest, diff_id = stream.finish()
            except OSError as e:
                raise _disk_error(e, desc.digest) from e
        emit(pg.message("Verifying Checksum", layer_id))
        _verify(desc.digest, digest, job.diff_id, diff_id)
        emit(pg.message("Download complete", layer_id))
        emit(pg.message("Extracting", layer_id, desc.size, desc.size))
        self.store.content.commit_layer(work, job.diff_id, stream.uncompressed_size, desc.digest)


def _verify(want_digest: str, got_digest: str, want_diff: str, got_diff: str) -> None:
    if got_digest != want_digest:
        raise VerificationError(
            f"blob {want_digest} failed verification: its content hashes to {got_digest}; "
            "the registry sent corrupted or altered data"
        )
    if got_diff != want_diff:
        raise VerificationError(
            f"layer {want_digest} does not match the image config: it unpacks to {got_diff}, "
            f"the config says {want_diff}"
        )


def _check_layer_types(jobs: list[LayerJob]) -> None:
    for job in jobs:
        media_type = job.descriptor.media_type
        if "zstd" in media_type:
            raise UnsupportedManifest(
                f"layer {job.descriptor.digest} is zstd-compressed ({media_type}), which is not "
                "supported yet; pull a gzip variant of this image"
            )
        if media_type and media_type not in _LAYER_TYPES:
            raise UnsupportedManifest(f"unsupported layer media type {media_type!r}")


def _layer_entry(job: LayerJob, store: ImageStore) -> dict:
    return {
        "digest": job.descriptor.digest,
        "diff_id": job.diff_id,
        "media_type": job.descriptor.media_type,
        "compressed_size": job.descriptor.size,
        "size": store.content.layer_size(job.diff_id),
    }


def _disk_error(error: OSError, digest: str) -> AgentError:
    if error.errno == errno.ENOSPC:
        return StoreError(
            f"no space left on device while unpacking layer {digest}; free space "
            "(remove unused images) and pull again"
        )
    return StoreError(f"cannot write layer {digest}: {error}")


def _first_error(futures) -> BaseException:
    errors = [f.exception() for f in futures if f.exception() is not None]
    real = [e for e in errors if not isinstance(e, Cancelled)]
    return (real or errors)[0]


def _serialised(callback: pg.Progress) -> pg.Progress:
    lock = threading.Lock()

    def emit(msg: dict) -> None:
        with lock:
            callback(msg)

    return emit


def _check_platform(ref, config: dict, want: mf.Platform) -> None:
    """A single-platform image pulled for another platform, refused as dockerd refuses it."""
    actual = f"{config.get('os', '')}/{config.get('architecture', '')}"
    if actual != f"{want.os}/{want.architecture}":
        raise PlatformNotFound(
            f"image with reference {ref.familiar()} was found but does not match the specified "
            f"platform: wanted {want}, actual: {actual}"
        )
