"""A step's directory of changes taken as its layer's directory (not unpacked again from the
tar just written from it): the stored layer must be exactly what unpacking its own blob
makes, and a directory holding what no tar says must be unpacked instead. Runs as root
(owners, device nodes, trusted xattrs)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import stat
from pathlib import Path

import pytest
from vmctl_agent.build import commit, dispatch, layertar, overlay
from vmctl_agent.store.content import ContentStore
from vmctl_agent.store.images import ImageStore
from vmctl_agent.store.layers import LayerExtractor

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owners and whiteouts need root")

NS = 123_456_789  # a fraction of a second a tar cannot carry


def changes(tmp_path: Path) -> Path:
    """An upper directory as a RUN leaves it, with what the runtime made in it."""
    root = tmp_path / "upper"
    (root / "app/sub").mkdir(parents=True)
    os.chmod(root / "app", 0o750)
    os.chown(root / "app", 5, 6)
    tool = root / "app/tool"
    tool.write_text("tool")
    os.chown(tool, 7, 8)
    os.chmod(tool, 0o4755)
    os.setxattr(tool, "security.capability", b"\x01\x00\x00\x02" + b"\0" * 16)
    os.setxattr(tool, "user.note", b"kept")
    os.setxattr(tool, "trusted.overlay.origin", b"\0\xfb")  # overlayfs's own
    os.link(tool, root / "app/sub/again")
    os.symlink("tool", root / "app/link")
    os.mknod(root / "app/gone", stat.S_IFCHR, os.makedev(0, 0))  # a whiteout
    os.mkfifo(root / "app/pipe", 0o620)
    (root / "opaque").mkdir()
    os.setxattr(root / "opaque", "trusted.overlay.opaque", b"y")
    (root / "opaque/kept").write_text("k")
    (root / "proc").mkdir()  # a mount point the runtime made: not the step's
    os.setxattr(root, "trusted.overlay.uuid", os.urandom(16))  # what overlayfs 6.x marks
    os.setxattr(root / "app", "trusted.overlay.impure", b"y")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(root / "app/sock"))  # sockets are not carried in layers
    for path in sorted(root.rglob("*"), reverse=True):
        if not path.is_symlink() and not path.is_socket():
            os.utime(path, ns=(1_700_000_000 * 10**9 + NS,) * 2)
    return root


def skip(path: str, info: os.stat_result) -> bool:
    return path == "proc"


def unpacked(content: ContentStore, layer: dict, into: Path) -> Path:
    into.mkdir()
    with gzip.open(content.blob_path(layer["digest"])) as blob:
        LayerExtractor(str(into)).extract(blob)
    return into


def listing(root: Path) -> list[tuple]:
    rows = []
    for path in sorted(root.rglob("*")):
        info = os.lstat(path)
        node = stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode)
        xattrs = sorted(
            (n, os.getxattr(path, n, follow_symlinks=False))
            for n in os.listxattr(path, follow_symlinks=False)
        )
        body = path.read_bytes() if stat.S_ISREG(info.st_mode) else os.readlink(path) if (
            stat.S_ISLNK(info.st_mode)
        ) else b""  # fmt: skip
        times = None if node else info.st_mtime_ns  # the extractor leaves nodes' times
        rows.append((str(path.relative_to(root)), info.st_mode, info.st_uid, info.st_gid,
                     info.st_nlink, body, xattrs, times))  # fmt: skip
    return rows


def test_an_upper_directory_becomes_exactly_what_its_blob_unpacks_to(tmp_path):
    content = ContentStore(tmp_path / "store")
    upper = changes(tmp_path)
    layer = layertar.store_layer(content, upper, skip, adopt=True)
    assert not upper.exists()  # moved into the store, not copied
    stored = content.layer_dir(layer["diff_id"])
    assert listing(stored) == listing(unpacked(content, layer, tmp_path / "unpacked"))
    assert os.lstat(stored / "app/tool").st_mtime_ns % 10**9 == 0
    assert not (stored / "proc").exists() and not (stored / "app/sock").exists()
    assert "trusted.overlay.origin" not in os.listxattr(stored / "app/tool")
    assert not list(content.tmp.iterdir())


@pytest.mark.parametrize("oddity", ["trusted.other", "hard link out"])
def test_what_no_tar_says_is_unpacked_from_the_tar_instead(tmp_path, oddity):
    content = ContentStore(tmp_path / "store")
    upper = changes(tmp_path)
    if oddity == "hard link out":
        os.link(upper / "app/tool", tmp_path / "outside")
    else:
        os.setxattr(upper / "app/tool", oddity, b"x")
    layer = layertar.store_layer(content, upper, skip, adopt=True)
    assert upper.exists()  # left where it was; the layer unpacked from its blob
    stored = content.layer_dir(layer["diff_id"])
    assert listing(stored) == listing(unpacked(content, layer, tmp_path / "unpacked"))
    assert not list(content.tmp.iterdir())


def test_without_adopt_the_directory_stays(tmp_path):
    content = ContentStore(tmp_path / "store")
    upper = changes(tmp_path)
    layer = layertar.store_layer(content, upper, skip)
    assert (upper / "app/sock").exists() and (upper / "proc").exists()  # untouched
    stored = content.layer_dir(layer["diff_id"])
    assert listing(stored) == listing(unpacked(content, layer, tmp_path / "unpacked"))


def test_a_real_overlays_upper_with_copy_ups_is_taken(tmp_path):
    """What overlayfs itself writes in an upper directory (its uuid, origin and impure
    marks on copy-ups) does not keep the directory from being the layer's."""
    content = ContentStore(tmp_path / "store")
    lower = tmp_path / "layers/base/diff"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (lower / "old").write_text("deleted by the step")
    work = tmp_path / "work"
    work.mkdir()

    def step(root: str) -> None:
        os.makedirs(f"{root}/deps/pkg")
        Path(f"{root}/deps/pkg/a.py").write_text("a")
        with open(f"{root}/etc/passwd", "a") as f:  # a copy-up
            f.write("app:x:1000:1000::/app:/bin/sh\n")
        os.unlink(f"{root}/old")  # a whiteout

    overlay.run_mounted(tmp_path / "layers", [["base/diff"]], work, step)
    layer = layertar.store_layer(content, work / "upper", adopt=True)
    assert not (work / "upper").exists()
    stored = content.layer_dir(layer["diff_id"])
    assert listing(stored) == listing(unpacked(content, layer, tmp_path / "unpacked"))
    assert stat.S_ISCHR(os.lstat(stored / "old").st_mode)


def test_a_steps_image_is_recorded_durable_with_its_blobs(tmp_path):
    """commit writes the config and manifest without an fsync each: the record must then
    come from the path that syncs the filesystem first (and says so: no boot id left)."""
    store = ImageStore(tmp_path / "image")
    upper = tmp_path / "upper"
    (upper / "app").mkdir(parents=True)
    (upper / "app/f").write_text("f")
    layer = layertar.store_layer(store.content, upper, adopt=True)
    state = dispatch.StageState("", dispatch.initial_config({}), [], [])
    image_id = commit.commit(store, state, {"Cmd": ["/bin/sh", "-c", "#(nop) COPY"]}, layer)
    record = json.loads((store.root / "images" / f"{image_id[7:]}.json").read_text())
    assert record["boot_id"] == ""  # synced before it was written
    assert store.content.has_blob(image_id) and store.content.has_blob(record["manifest_digest"])
    assert store.exists(image_id) and store.content.has_layer(layer["diff_id"])
