"""Layer extraction: hostile tars cannot write outside the layer; a rootfs keeps its metadata.

Runs as root (CI does): ownership, device nodes and overlayfs whiteouts need it.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
from imagekit import TarEntry, directory, file, hardlink, opaque, symlink, tar_bytes, whiteout
from vmctl_agent.errors import UnsafeLayer
from vmctl_agent.store.content import remove_tree
from vmctl_agent.store.layers import LayerExtractor

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="extraction tests need root (CI runs as root)"
)


def extract(entries, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    LayerExtractor(str(root)).extract(io.BytesIO(tar_bytes(entries)))
    return root


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A directory outside the layer that hostile entries aim at; must stay empty."""
    target = tmp_path / "host"
    target.mkdir()
    return target


def listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# -- hostile layers ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "..", "./../x"])
def test_dotdot_names_are_refused(tmp_path, name):
    with pytest.raises(UnsafeLayer, match="points outside the layer"):
        extract([file(name, b"x")], tmp_path / "layer")
    assert not (tmp_path / "escape").exists()


def test_absolute_names_stay_inside_the_layer(tmp_path):
    unique = f"vmctl-test-{uuid.uuid4().hex}"
    layer = extract([file(f"/{unique}/file", b"x"), file("//etc//x", b"y")], tmp_path / "layer")
    assert (layer / unique / "file").read_bytes() == b"x"
    assert (layer / "etc" / "x").read_bytes() == b"y"
    assert not Path("/", unique).exists()


@pytest.mark.parametrize("target", ["HOST", "../../../../../../HOST", "/../HOST"])
def test_writing_through_a_symlink_is_refused(tmp_path, host_dir, target):
    link = target.replace("HOST", str(host_dir).lstrip("/")) if target != "HOST" else str(host_dir)
    entries = [symlink("evil", link), file("evil/pwned", b"owned")]
    with pytest.raises(UnsafeLayer, match="'evil/pwned' goes through 'evil'"):
        extract(entries, tmp_path / "layer")
    assert listing(host_dir) == []


def test_symlink_swapped_in_for_a_directory_is_not_followed(tmp_path, host_dir):
    entries = [directory("a"), file("a/ok", b"1"), symlink("a", str(host_dir)), file("a/x", b"2")]
    with pytest.raises(UnsafeLayer, match="goes through 'a'"):
        extract(entries, tmp_path / "layer")
    assert listing(host_dir) == []


def test_whiteout_through_a_symlink_is_refused(tmp_path, host_dir):
    (host_dir / "precious").write_text("keep")
    with pytest.raises(UnsafeLayer, match="goes through"):
        extract([symlink("evil", str(host_dir)), whiteout("evil/precious")], tmp_path / "layer")
    assert (host_dir / "precious").read_text() == "keep"


def test_symlink_from_an_earlier_layer_cannot_be_written_through(tmp_path, host_dir):
    first = extract([symlink("evil", str(host_dir))], tmp_path / "l1")
    second = extract([file("evil/pwned", b"x")], tmp_path / "l2")
    assert os.readlink(first / "evil") == str(host_dir)
    assert (second / "evil" / "pwned").read_bytes() == b"x"
    assert listing(host_dir) == []


def test_a_directory_entry_replaces_a_symlink(tmp_path, host_dir):
    layer = extract(
        [symlink("d", str(host_dir)), directory("d"), file("d/x", b"1")], tmp_path / "layer"
    )
    assert (layer / "d").is_dir() and not (layer / "d").is_symlink()
    assert listing(host_dir) == []


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("../../etc/passwd", "points outside the layer"),
        ("/etc/passwd", "not a file in this layer"),
        ("missing/file", "not a file in this layer"),
    ],
)
def test_hardlinks_outside_the_layer_are_refused(tmp_path, target, message):
    with pytest.raises(UnsafeLayer, match=message):
        extract([hardlink("hl", target)], tmp_path / "layer")
    assert os.stat("/etc/passwd").st_nlink == 1


def test_hardlink_through_a_symlinked_dir_is_refused(tmp_path, host_dir):
    (host_dir / "secret").write_text("s")
    with pytest.raises(UnsafeLayer, match="goes through"):
        extract([symlink("d", str(host_dir)), hardlink("hl", "d/secret")], tmp_path / "layer")
    assert (host_dir / "secret").stat().st_nlink == 1


def test_overlay_xattrs_from_the_layer_are_ignored(tmp_path):
    layer = extract(
        [directory("d", xattrs={"trusted.overlay.redirect": "/etc", "user.note": "kept"})],
        tmp_path / "layer",
    )
    assert os.getxattr(layer / "d", "user.note") == b"kept"
    assert "trusted.overlay.redirect" not in os.listxattr(layer / "d")


def test_garbage_is_not_a_tar(tmp_path):
    (tmp_path / "layer").mkdir()
    with pytest.raises(UnsafeLayer, match="not a valid tar"):
        LayerExtractor(str(tmp_path / "layer")).extract(io.BytesIO(b"\x01" * 1024))


# -- a rootfs keeps what an image needs -------------------------------------------------------


def test_ownership_modes_setuid_and_times_are_kept(tmp_path):
    layer = extract(
        [
            directory("bin", mode=0o755, mtime=1_600_000_000),
            file("bin/su", b"\x7fELF", mode=0o4755, uid=0, gid=0),
            file("bin/app", b"x", mode=0o2750, uid=1000, gid=1001, mtime=1_500_000_000),
            directory("tmp", mode=0o1777),
            directory("home/user", mode=0o700, uid=1000, gid=1000),
            symlink("home/link", "user", uid=1000, gid=1000),
        ],
        tmp_path / "layer",
    )
    su, app = (layer / "bin/su").stat(), (layer / "bin/app").stat()
    assert stat.S_IMODE(su.st_mode) == 0o4755
    assert (stat.S_IMODE(app.st_mode), app.st_uid, app.st_gid) == (0o2750, 1000, 1001)
    assert app.st_mtime == 1_500_000_000
    assert (layer / "bin").stat().st_mtime == 1_600_000_000
    assert stat.S_IMODE((layer / "tmp").stat().st_mode) == 0o1777
    home = (layer / "home/user").stat()
    assert (stat.S_IMODE(home.st_mode), home.st_uid) == (0o700, 1000)
    assert (layer / "home/link").lstat().st_uid == 1000


def test_devices_fifos_hardlinks_and_xattrs(tmp_path):
    layer = extract(
        [
            TarEntry("dev/null", "char", mode=0o666, devmajor=1, devminor=3),
            TarEntry("dev/loop0", "block", mode=0o660, devmajor=7, devminor=0),
            TarEntry("run/fifo", "fifo", mode=0o600),
            file("usr/bin/ping", b"ping", mode=0o755, xattrs={"user.cap": "net_raw"}),
            hardlink("usr/bin/ping6", "usr/bin/ping"),
        ],
        tmp_path / "layer",
    )
    null = (layer / "dev/null").stat()
    assert (
        stat.S_ISCHR(null.st_mode) and os.major(null.st_rdev) == 1 and os.minor(null.st_rdev) == 3
    )
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK((layer / "dev/loop0").stat().st_mode)
    assert stat.S_ISFIFO((layer / "run/fifo").stat().st_mode)
    assert (layer / "usr/bin/ping6").stat().st_ino == (layer / "usr/bin/ping").stat().st_ino
    assert os.getxattr(layer / "usr/bin/ping", "user.cap") == b"net_raw"


def test_later_entries_replace_earlier_ones(tmp_path):
    layer = extract(
        [
            file("a", b"file first"),
            directory("a"),
            file("a/inner", b"1"),
            directory("b"),
            file("b/inner", b"2"),
            file("b", b"file last"),
            file("c", b"old"),
            file("c", b"new"),
        ],
        tmp_path / "layer",
    )
    assert (layer / "a" / "inner").read_bytes() == b"1"
    assert (layer / "b").read_bytes() == b"file last"
    assert (layer / "c").read_bytes() == b"new"


def test_many_directories_do_not_exhaust_file_descriptors(tmp_path):
    entries = [file(f"d{i}/sub/f", b"x") for i in range(1500)]
    before = len(os.listdir("/proc/self/fd"))  # others' (Qt's, the registry's) stay open
    layer = extract(entries, tmp_path / "layer")
    assert len(list(layer.glob("d*/sub/f"))) == 1500
    assert len(os.listdir("/proc/self/fd")) - before < 16


# -- whiteouts, seen through a real overlayfs mount ---------------------------------------------


def test_whiteouts_across_three_layers(tmp_path):
    l1 = extract(
        [
            file("a/1", b"1"),
            file("a/2", b"2"),
            file("b/x", b"x"),
            file("c/keep", b"c"),
            file("top", b"t"),
        ],
        tmp_path / "l1",
    )
    l2 = extract(
        [whiteout("a/1"), opaque("b"), file("b/y", b"y"), whiteout("top")], tmp_path / "l2"
    )
    l3 = extract([file("a/1", b"again"), whiteout("c")], tmp_path / "l3")
    assert stat.S_ISCHR((l2 / "a" / "1").lstat().st_mode)
    assert (l2 / "a" / "1").lstat().st_rdev == 0
    assert os.getxattr(l2 / "b", "trusted.overlay.opaque") == b"y"
    merged = tmp_path / "merged"
    merged.mkdir()
    lower = ":".join(str(p) for p in (l3, l2, l1))
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(merged)], check=True
    )
    try:
        assert listing(merged) == ["a", "a/1", "a/2", "b", "b/y"]
        assert (merged / "a" / "1").read_bytes() == b"again"
    finally:
        subprocess.run(["umount", str(merged)], check=True)


@pytest.fixture
def deep_dir(tmp_path):
    """Removed with our own walker: pytest's recursive cleanup cannot remove 1,500 levels."""
    yield tmp_path / "deep"
    remove_tree(tmp_path / "deep")


def test_very_deep_paths(deep_dir):
    """1,500 levels: no recursion limit in extraction, replacement or removal."""
    deep = "/".join(["d"] * 1500)
    layer = extract([file(f"{deep}/f", b"deep"), file("x/" + deep, b"")], deep_dir / "l1")
    fd = os.open(layer, os.O_RDONLY)
    try:
        for _ in range(1500):
            fd, old = os.open("d", os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
        assert os.stat("f", dir_fd=fd).st_size == 4
    finally:
        os.close(fd)
    replaced = extract([file(f"{deep}/f", b"deep"), file("d", b"now a file")], deep_dir / "l2")
    assert (replaced / "d").read_bytes() == b"now a file"
    remove_tree(layer)
    assert not layer.exists()


def test_sparse_files_from_gnu_tar(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.seek(8 << 20)
        f.write(b"end")
    tar = tmp_path / "layer.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(tar), "-C", str(src), "sparse"], check=True)
    layer = tmp_path / "layer"
    layer.mkdir()
    with open(tar, "rb") as f:
        LayerExtractor(str(layer)).extract(f)
    data = (layer / "sparse").read_bytes()
    assert len(data) == (8 << 20) + 3 and data.endswith(b"end") and not data[:-3].strip(b"\0")


@pytest.mark.parametrize("tar", [b"", b"\0" * 1024, tar_bytes([])])
def test_empty_layers(tmp_path, tar):
    (tmp_path / "layer").mkdir()
    LayerExtractor(str(tmp_path / "layer")).extract(io.BytesIO(tar))
    assert listing(tmp_path / "layer") == []


def test_fractional_pax_times_are_taken(tmp_path):
    """Python's tarfile (docker-py's contexts) writes st_mtime's fraction in a PAX header."""
    root = extract(
        [
            directory("d", mtime=1_600_000_000.25),
            file("d/f", b"x", mtime=1_500_000_000.5),
            symlink("d/l", "f", mtime=1_400_000_000.75),
        ],
        tmp_path / "layer",
    )
    assert os.lstat(root / "d/f").st_mtime_ns == 1_500_000_000_500_000_000
    assert os.lstat(root / "d/l").st_mtime_ns == 1_400_000_000_750_000_000
    assert os.lstat(root / "d").st_mtime_ns == 1_600_000_000_250_000_000
