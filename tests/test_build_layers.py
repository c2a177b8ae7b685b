"""The builder's file work without an engine: a directory of changes as a layer tar (overlay
whiteouts to OCI ones, hard links, Go's modes), COPY's rules, paths kept inside their root,
and `docker diff`'s view of an upper directory. Runs as root (device nodes, xattrs, chown)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from vmctl_agent.build import copier, layertar, overlay
from vmctl_agent.runtime import inside
from vmctl_agent.store.content import ContentStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts and owners need root")


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def members(root: Path) -> dict[str, tarfile.TarInfo]:
    data = b"".join(layertar.tar_chunks(root))
    assert data.endswith(b"\0" * 1024) and len(data) % 512 == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_overlay_whiteouts_become_oci_whiteouts(tmp_path):
    (tmp_path / "etc").mkdir()
    whiteout(tmp_path / "etc/gone")
    (tmp_path / "opaque").mkdir()
    os.setxattr(tmp_path / "opaque", "trusted.overlay.opaque", b"y")
    (tmp_path / "opaque/kept").write_text("k")
    found = members(tmp_path)
    assert found["etc/.wh.gone"].isreg() and found["etc/.wh.gone"].mode == 0o600
    assert "etc/gone" not in found
    assert found["opaque/.wh..wh..opq"].isreg() and "opaque/kept" in found
    names = list(found)
    assert names.index("opaque") < names.index("opaque/.wh..wh..opq")


def test_modes_owners_links_and_xattrs_as_go_writes_them(tmp_path):
    (tmp_path / "bin").mkdir(mode=0o755)
    tool = tmp_path / "bin/tool"
    tool.write_text("x")
    os.chown(tool, 7, 8)
    os.chmod(tool, 0o4755)
    os.link(tool, tmp_path / "bin/zz-again")  # after tool: the link
    os.symlink("tool", tmp_path / "bin/link")
    os.setxattr(tool, "security.capability", b"\x01\x00\x00\x02" + b"\0" * 16)
    found = members(tmp_path)
    assert found["bin"].mode == 0o40755
    assert (found["bin/tool"].mode, found["bin/tool"].uid, found["bin/tool"].gid) == (
        0o104755, 7, 8
    )  # fmt: skip
    assert found["bin/zz-again"].islnk() and found["bin/zz-again"].linkname == "bin/tool"
    assert found["bin/link"].issym() and found["bin/link"].linkname == "tool"
    assert "SCHILY.xattr.security.capability" in found["bin/tool"].pax_headers


def test_an_empty_change_is_no_layer_and_a_change_is_stored_as_pulled(tmp_path):
    content = ContentStore(tmp_path / "store")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert layertar.store_layer(content, empty) is None
    changed = tmp_path / "changed"
    (changed / "app").mkdir(parents=True)
    (changed / "app/f").write_text("data")
    layer = layertar.store_layer(content, changed)
    assert content.has_layer(layer["diff_id"]) and content.has_blob(layer["digest"])
    stored = content.layer_dir(layer["diff_id"])
    assert (stored / "app/f").read_text() == "data"
    assert layer["media_type"] == layertar.GZIP_LAYER and layer["size"] > 0
    again = layertar.store_layer(content, changed)
    assert again["diff_id"] == layer["diff_id"]  # same changes, same layer
    assert not list(content.tmp.iterdir())


def test_scoped_paths_never_leave_their_root(tmp_path):
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    os.symlink("/", root / "abs")
    os.symlink("../../..", root / "up")
    os.symlink("real", root / "rel")
    assert overlay.scoped(str(root), "/abs/etc/passwd") == f"{root}/etc/passwd"
    assert overlay.scoped(str(root), "up/x") == f"{root}/x"
    assert overlay.scoped(str(root), "rel/y") == f"{root}/real/y"
    assert overlay.scoped(str(root), "../../etc") == f"{root}/etc"
    os.symlink("loop", root / "loop")
    with pytest.raises(overlay.OutsideRoot, match="too many levels"):
        overlay.scoped(str(root), "loop/x")


def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "dir/sub").mkdir(parents=True)
    (ctx / "dir/a.txt").write_text("a")
    (ctx / "dir/sub/b.txt").write_text("b")
    (ctx / "one.txt").write_text("1")
    os.symlink("/etc/shadow", ctx / "dir/evil")
    return ctx


def copy(tmp_path: Path, patterns: list[str], dest: str, **kw) -> Path:
    image = tmp_path / "image"
    image.mkdir(exist_ok=True)
    sources = copier.find_sources(str(tmp_path / "ctx"), patterns, "COPY")
    target = copier.Target(dest, kw.get("uid", 0), kw.get("gid", 0), kw.get("mode"), False)
    copier.copy(str(image), sources, target, tmp_path)
    return image


def test_copy_follows_dockers_directory_rules(tmp_path):
    context(tmp_path)
    image = copy(tmp_path, ["dir"], "/app")
    assert sorted(os.listdir(image / "app")) == ["a.txt", "evil", "sub"]  # contents, not dir
    assert os.readlink(image / "app/evil") == "/etc/shadow"  # copied as a link, not followed
    copy(tmp_path, ["one.txt"], "/file")
    assert (image / "file").read_text() == "1"
    copy(tmp_path, ["one.txt"], "/into/")
    assert (image / "into/one.txt").read_text() == "1"
    copy(tmp_path, ["dir/*.txt", "one.txt"], "/glob/", uid=5, gid=6, mode=0o640)
    assert sorted(os.listdir(image / "glob")) == ["a.txt", "one.txt"]
    info = os.stat(image / "glob/a.txt")
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (5, 6, 0o640)
    assert os.stat(image / "glob").st_uid == 5  # made for the copy: owned as --chown says


def test_copy_mistakes_are_dockerds(tmp_path):
    context(tmp_path)
    with pytest.raises(copier.CopyError, match="must be a directory and end with a /"):
        copy(tmp_path, ["one.txt", "dir"], "/dst")
    with pytest.raises(copier.CopyError, match="file not found in build context"):
        copy(tmp_path, ["nothing*"], "/dst/")
    with pytest.raises(copier.CopyError, match="forbidden path outside the build context"):
        copy(tmp_path, ["../etc/passwd"], "/dst")
    image = tmp_path / "image"
    os.symlink("/", image / "hostroot")
    copy(tmp_path, ["one.txt"], "/hostroot/tmp/planted")  # lands inside the image's root
    assert (image / "tmp/planted").read_text() == "1"


def test_diff_of_an_upper_directory(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc/passwd").write_text("root")
    (lower / "bin").mkdir()
    (lower / "bin/ls").write_text("ls")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/passwd").write_text("changed")
    (upper / "bin").mkdir()
    whiteout(upper / "bin/ls")
    (upper / "new").write_text("n")
    (upper / "proc").mkdir()  # a mount point the runtime made: not the container's change
    found = inside.changes(upper, (str(lower),))
    assert found == [
        {"Path": "/bin", "Kind": 0}, {"Path": "/bin/ls", "Kind": 2},
        {"Path": "/etc", "Kind": 0}, {"Path": "/etc/passwd", "Kind": 0},
        {"Path": "/new", "Kind": 1},
    ]  # fmt: skip


def test_an_image_too_deep_to_mount_is_said_plainly(tmp_path):
    layers_root = tmp_path / "layers"
    layers_root.mkdir()
    lowers = [f"{n:064x}/diff" for n in range(70)]
    for lower in lowers:
        (layers_root / lower).mkdir(parents=True)
    (tmp_path / "work").mkdir()
    with pytest.raises(overlay.TooManyLayers, match=r"too many layers \(70\).*combine steps"):
        overlay.run_mounted(layers_root, [lowers], tmp_path / "work", lambda root: None)
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
