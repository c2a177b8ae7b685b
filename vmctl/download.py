"""Files fetched once and verified: a URL (resumable, with HTTP ranges) or a local path,
copied under a temporary name, checked against a SHA-512 digest, and only then renamed into
place, so a cache never holds a partial or wrong file. Parallel fetches into one directory
wait for one another."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests

from vmctl.errors import VmctlError

_CHUNK = 1 << 20
TIMEOUT = (15, 60)  # connect, read (s)


def file_sha512(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha512").hexdigest()


@contextlib.contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold a lock on `directory` itself (no lock file left behind), so parallel downloads or
    builds into it wait for one another. No-op where flock does not exist (Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def checked_digest(sha512: str) -> str:
    digest = sha512.strip().lower()
    if len(digest) != 128 or not all(c in "0123456789abcdef" for c in digest):
        raise VmctlError(f"{sha512!r} is not a SHA-512 digest (128 hex digits)")
    return digest


def _local_source(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(unquote(urlsplit(url).path))
    return None if "://" in url else Path(url).expanduser()


def download(
    url: str,
    sha512: str,
    dest: Path,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Fetch `url` to `dest` once: streamed into `dest.part` (resumed with a Range request on
    the next call after an interruption), verified, then renamed into place read-only."""
    digest = checked_digest(sha512)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(dest.parent):
        if dest.exists():
            return dest
        part = dest.with_name(dest.name + ".part")
        source = _local_source(url)
        if source is not None:
            _copy(source, part, progress)
        else:
            _fetch(url, part, progress)
        actual = file_sha512(part)
        if actual != digest:
            part.unlink()
            raise VmctlError(
                f"checksum mismatch for {url}: expected sha512 {digest}, got {actual}. The "
                "download was deleted; run again, or pin the new digest if the file changed"
            )
        os.chmod(part, 0o444)
        os.replace(part, dest)
    return dest


def _copy(source: Path, part: Path, progress: Callable[[int, int | None], None] | None) -> None:
    try:
        src = open(source, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise VmctlError(f"cannot read image {source}: {e.strerror}") from e
    with src, open(part, "wb") as out:
        total, done = os.fstat(src.fileno()).st_size, 0
        while chunk := src.read(_CHUNK):
            out.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
        out.flush()
        os.fsync(out.fileno())


def _fetch(url: str, part: Path, progress: Callable[[int, int | None], None] | None) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=TIMEOUT)
    except requests.RequestException as e:
        host = urlsplit(url).netloc
        raise VmctlError(
            f"cannot reach {host} to download {url} ({type(e).__name__}): check the network, "
            "or use a local image (`vmctl image build` makes one offline; --image PATH)"
        ) from e
    with response:
        if response.status_code == 416 and offset:
            return  # the part is already whole; its digest decides
        if response.status_code not in (200, 206):
            raise VmctlError(
                f"downloading {url} failed: HTTP {response.status_code} {response.reason}"
            )
        if response.status_code == 200 or not _content_range(response).startswith(f"{offset}-"):
            offset = 0  # the server ignored Range: start over
        _stream(response, part, offset, url, progress)


def _content_range(response: requests.Response) -> str:
    return response.headers.get("Content-Range", "").removeprefix("bytes ").strip()


def _stream(response, part, offset, url, progress) -> None:
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length and length.isdigit() else None
    done, error = offset, None
    with open(part, "ab" if offset else "wb") as out:
        try:
            for chunk in response.iter_content(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
        except requests.RequestException as e:
            error = type(e).__name__  # keep what arrived: the next call resumes from there
        out.flush()
        os.fsync(out.fileno())
    if error or (total is not None and done < total):
        raise VmctlError(
            f"the download of {url} was interrupted after {done} bytes"
            f"{f' ({error})' if error else ''}: run the same command again to resume"
        )
