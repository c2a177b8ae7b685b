"""Base images: the read-only Debian 12 disk every VM's overlay starts from.

Two ways to get one, both cached once in `paths.images_dir()` for all VMs:
- `resolve()` downloads Debian's genericcloud image (pinned URL and SHA-512), resumable and
  verified before it is renamed into place. It boots with firmware through its own GRUB.
- `build()` makes an equivalent image offline on Linux with mmdebstrap (no loop mounts:
  `mke2fs -d` turns the tree into a whole-disk ext4). It ships the kernel and initrd as sidecar
  files for direct kernel boot, which is faster under TCG and needs no bootloader.

Every cached image is a directory with a `manifest.json` (digests, kernel, cmdline), so a disk
can be checked before first use (`vmctl.disk.verify_base`) and its sidecars found again.
The recipe is pure data and one shell script (`vmctl.imagerecipe`); its digest names the build.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from vmctl import atomic, download
from vmctl.errors import VmctlError
from vmctl.imagerecipe import DEFAULT_RECIPE, RECIPE_VERSION, Recipe, mmdebstrap_argv, recipe_script
from vmctl.paths import images_dir

# Debian 12 genericcloud amd64, a dated build (the one lima's debian-12 template pins too).
DEFAULT_URL = (
    "https://cloud.debian.org/images/cloud/bookworm/20250428-2096/"
    "debian-12-genericcloud-amd64-20250428-2096.qcow2"
)
DEFAULT_SHA512 = (
    "f2a87069aad71019ee0c8215f36bcf1e30248494af41da105f461876ea23d799"
    "7782d7a04b68b8cd39b19d4bd1779ae0dfcd6a91d1a2ac719555d673515b4d93"
)
MANIFEST = "manifest.json"
BUILD_SPACE = 3 << 30  # rootfs tree + sparse raw + qcow2, with room to spare


@dataclass(frozen=True)
class BaseImage:
    """A read-only base disk, with a kernel and initrd when it is meant for direct kernel boot."""

    disk: Path  # qcow2 (or raw), never written: each VM gets its own overlay
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None


def read_manifest(directory: Path) -> dict:
    try:
        return json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise VmctlError(
            f"{directory / MANIFEST} is unreadable ({e}): delete {directory} and build or "
            "download the image again"
        ) from e


def load(directory: Path) -> BaseImage:
    """The image a manifest describes."""
    m = read_manifest(directory)
    side = {k: directory / m[k] if m.get(k) else None for k in ("kernel", "initrd")}
    return BaseImage(directory / m["disk"], side["kernel"], side["initrd"], m.get("cmdline"))


def _write_manifest(directory: Path, **fields: object) -> None:
    text = json.dumps({"format": "vmctl-image/1", **fields}, indent=1) + "\n"
    atomic.write_text(directory / MANIFEST, text)


# --------------------------------------------------------------------------- resolve


def resolve(
    image: str | None, progress: Callable[[int, int | None], None] | None = None
) -> BaseImage:
    """The base image a VM boots from.

    None: Debian's genericcloud image, downloaded once (pinned URL and digest).
    A path: a directory made by `build()`, or a qcow2/raw file (with kernel and initrd sidecars
    when a manifest beside it names that file).
    An http(s) URL: downloaded once, verified against `URL#sha512=HEX`, else against a
    SHA512SUMS file beside it; without either it is refused (an unverified disk is not booted).
    """
    if image is None:
        return _downloaded(DEFAULT_URL, DEFAULT_SHA512, progress)
    if image.startswith(("http://", "https://")):
        return _downloaded(*_pinned(image), progress)
    return _local(Path(image).expanduser())


def _downloaded(url: str, sha512: str, progress) -> BaseImage:
    digest = download.checked_digest(sha512)
    directory = images_dir() / f"sha512-{digest[:16]}"
    name = Path(urlsplit(url).path).name or "disk.img"
    download.download(url, digest, directory / name, progress)
    if not (directory / MANIFEST).is_file():
        _write_manifest(directory, source=url, disk=name, sha512={name: digest})
    return load(directory)


def _pinned(url: str) -> tuple[str, str]:
    base, _, fragment = url.partition("#")
    if fragment.startswith("sha512="):
        return base, fragment.removeprefix("sha512=")
    name = Path(urlsplit(base).path).name
    sums = urljoin(base, "SHA512SUMS")
    try:
        response = requests.get(sums, timeout=download.TIMEOUT)
    except requests.RequestException as e:
        raise VmctlError(f"cannot reach {urlsplit(base).netloc} to fetch {sums}: {e}") from e
    for line in response.text.splitlines() if response.ok else ():
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("*") == name:
            return base, fields[0]
    raise VmctlError(
        f"cannot verify {base}: no '#sha512=<digest>' in the URL and no entry for {name} in a "
        f"SHA512SUMS beside it. Append '#sha512=' and the publisher's digest, or download the "
        "file yourself and pass its path"
    )


def _local(path: Path) -> BaseImage:
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise VmctlError(f"{path} is a directory without a {MANIFEST}: give a disk image file")
        return load(path.resolve())
    if not path.is_file():
        raise VmctlError(
            f"no image at {path}: give a qcow2 or raw disk, a directory made by "
            "`vmctl image build`, or an http(s) URL"
        )
    path = path.resolve()
    if (path.parent / MANIFEST).is_file() and read_manifest(path.parent).get("disk") == path.name:
        return load(path.parent)
    return BaseImage(path)


# --------------------------------------------------------------------------- build


def build(
    dest_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    recipe: Recipe = DEFAULT_RECIPE,
) -> BaseImage:
    """The offline base image, built once per recipe into `dest_dir/built-<digest>` (Linux, as
    root). Built in a temp dir beside it and renamed into place; a failure leaves nothing."""
    dest_dir = Path(dest_dir) if dest_dir is not None else images_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / f"built-{recipe.digest()}"
    with download.exclusive(dest_dir):
        if (final / MANIFEST).is_file():
            return load(final)
        for stale in dest_dir.glob(".build-*"):  # a build killed before it could clean up
            _remove_tree(stale)
        _preflight(dest_dir)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=dest_dir))
        work.chmod(0o755)  # apt's _apt user downloads into the tree
        try:
            os.rename(_build_in(work, recipe, progress or (lambda _: None)), final)
        finally:
            _remove_tree(work)
    return load(final)


def _remove_tree(path: Path) -> None:
    """Never follow a mount (/proc, /dev) that a killed mmdebstrap may have left in the tree."""
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def _preflight(dest_dir: Path) -> None:
    if not sys.platform.startswith("linux"):
        raise VmctlError("`vmctl image build` runs on Linux only; elsewhere vmctl downloads it")
    missing = [tool for tool in ("mmdebstrap", "mke2fs", "qemu-img") if not shutil.which(tool)]
    if missing:
        raise VmctlError(
            f"cannot build the image: {', '.join(missing)} not found; on Debian or Ubuntu: "
            "apt-get install mmdebstrap e2fsprogs qemu-utils"
        )
    if os.geteuid() != 0:
        raise VmctlError(
            "`vmctl image build` needs root: mmdebstrap's root mode mounts /proc in the tree "
            "and keeps file owners right for mke2fs; run it with sudo"
        )
    free = shutil.disk_usage(dest_dir).free
    if free < BUILD_SPACE:
        raise VmctlError(
            f"not enough space to build the image in {dest_dir}: {free >> 20} MiB free, "
            f"{BUILD_SPACE >> 20} MiB needed; free some space or set VMCTL_HOME elsewhere"
        )


def _build_in(work: Path, recipe: Recipe, progress: Callable[[str], None]) -> Path:
    """mmdebstrap into a tree, the kernel and initrd copied out, the tree into a qcow2."""
    rootfs, out, script = work / "rootfs", work / "image", work / "hook.sh"
    rootfs.mkdir()
    out.mkdir(mode=0o755)
    script.write_text(recipe_script(recipe))
    _run(mmdebstrap_argv(recipe, rootfs, script), "installing Debian packages", progress)
    kernel = _single(rootfs / "boot", "vmlinuz-*")
    shutil.copyfile(kernel, out / "vmlinuz")
    shutil.copyfile(_single(rootfs / "boot", "initrd.img-*"), out / "initrd.img")
    _make_disk(rootfs, work / "disk.raw", out / "disk.qcow2", recipe.size_gib, progress)
    files = ("disk.qcow2", "vmlinuz", "initrd.img")
    _write_manifest(
        out,
        source=f"mmdebstrap {recipe.suite}",
        recipe_version=RECIPE_VERSION,
        recipe=recipe.digest(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        kernel_version=kernel.name.removeprefix("vmlinuz-"),
        disk="disk.qcow2",
        kernel="vmlinuz",
        initrd="initrd.img",
        cmdline=recipe.cmdline,
        sha512={name: download.file_sha512(out / name) for name in files},
    )
    for name in (*files, MANIFEST):
        os.chmod(out / name, 0o444)
    return out


def _make_disk(tree: Path, raw: Path, qcow2: Path, size_gib: int, progress) -> None:
    """A whole-disk ext4 from the tree without mounting anything, then a compressed qcow2
    (QEMU inflates clusters natively, so compression costs the guest nothing noticeable)."""
    mke2fs = ["mke2fs", "-q", "-t", "ext4", "-d", str(tree), "-L", "vmctl-root"]
    _run([*mke2fs, str(raw), f"{size_gib}G"], "making the ext4 filesystem", progress)
    convert = ["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2"]
    _run([*convert, str(raw), str(qcow2)], "converting to qcow2", progress)
    raw.unlink()


def _single(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        raise VmctlError(f"the image build found {len(found)} {pattern} in /boot, expected one")
    return found[0]


def _run(argv: list[str], stage: str, progress: Callable[[str], None]) -> None:
    """Run one build step, passing its `I:` lines on; on failure, raise with its output's tail."""
    progress(stage)
    tail: collections.deque[str] = collections.deque(maxlen=25)
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    except OSError as e:
        raise VmctlError(f"{stage} failed: cannot run {argv[0]}: {e.strerror}") from e
    with proc:
        for line in proc.stdout:
            tail.append(line.rstrip())
            if line.startswith("I: "):
                progress(f"{stage}: {line[3:].strip()}")
    if proc.returncode != 0:
        raise VmctlError(
            f"{stage} failed ({argv[0]} exited with {proc.returncode}):\n" + "\n".join(tail)
        )
