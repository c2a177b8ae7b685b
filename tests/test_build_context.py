"""The build context as streamed and indexed (never unpacked): the index must say what the
image store's extractor would have made of the same tar, refuse what it refuses, and read
each file's bytes back from the spool; COPY's cache key over it must hit for an unchanged
context and miss for a changed file, mode or owner (not a changed time), as dockerd's."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from agentserver import serving
from contextkit import assert_nothing_left, entry, post, tar_of
from vmctl_agent.build import context, trees
from vmctl_agent.errors import UnsafeLayer
from vmctl_agent.store.layers import LayerExtractor

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="owners and devices need root")


def member(name: str, data: bytes = b"", kind=tarfile.REGTYPE, link: str = "", **kw) -> tuple:
    info, _ = entry(name, data, kind, link)
    for key, value in kw.items():
        setattr(info, key, value)
    return info, data


TRICKY = [
    member("dir/", kind=tarfile.DIRTYPE, mode=0o750, uid=3, gid=4, mtime=1000),
    member("dir/a.txt", b"first", mode=0o640, uid=5, gid=6, mtime=2000),
    member("dir/a.txt", b"second, later wins", mode=0o600, mtime=2100),
    member("deep/er/file", b"implicit parents", mtime=3000),
    member("deep/", kind=tarfile.DIRTYPE, mode=0o700, mtime=4000),  # after its children
    member("hard", kind=tarfile.LNKTYPE, link="dir/a.txt"),
    member("link", kind=tarfile.SYMTYPE, link="dir/a.txt"),
    member("gone/x", b"x"),
    member(".wh.gone"),  # a whiteout, as the extractor reads one
    member("was-file", b"y"),
    member("was-file/", kind=tarfile.DIRTYPE, mode=0o711),
    member("was-dir/inner", b"z"),
    member("was-dir", b"now a file", mode=0o604),
    member("pipe", kind=tarfile.FIFOTYPE, mode=0o620),
    member("./", kind=tarfile.DIRTYPE, mode=0o755, mtime=5000),
]


def received(tmp_path: Path, body: bytes):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return context.receive(io.BytesIO(body), work)


def extracted(tmp_path: Path, body: bytes) -> Path:
    root = tmp_path / "extracted"
    root.mkdir()
    LayerExtractor(str(root)).extract(io.BytesIO(body + b"\0" * 1024))
    return root


def listing(tree: trees.Tree, top: str) -> list[tuple]:
    """What the copy rules and the cache read of a tree (times apart from directories made
    for missing parents, which get the time they were made)."""
    rows = []
    for rel, path, info in trees.walk(tree, top):
        mode = info.st_mode
        body = tree.digest(path) if stat.S_ISREG(mode) else tree.link(path) or ""
        made = stat.S_ISDIR(mode) and info.st_mtime_ns > 10**18
        times = None if made or stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) else info.st_mtime_ns
        rows.append((rel, mode, info.st_uid, info.st_gid, body, times))
    return rows


@root_only
def test_the_index_is_what_the_extractor_makes(tmp_path):
    body = tar_of(TRICKY)
    tree = received(tmp_path, body)
    assert listing(tree, "/") == listing(trees.DISK, str(extracted(tmp_path, body)))
    assert tree.read_bytes("/hard") == b"second, later wins"
    with tree.open("/dir/a.txt") as f:
        f.seek(8)
        assert f.read(5) == b"later"


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress])
def test_an_unpadded_or_compressed_context_is_read_whole(tmp_path, compress):
    body = tar_of([member("Dockerfile", b"FROM busybox\n"), member("last", b"no padding")])
    unpadded = body[: body.index(b"no padding") + len(b"no padding")]
    tree = received(tmp_path, compress(unpadded))
    assert tree.read_bytes("/last") == b"no padding"
    with tarfile.open(tree.spool) as spooled:  # the spool is a whole tar
        assert spooled.getnames() == ["Dockerfile", "last"]


def test_a_sparse_file_is_read_as_its_bytes(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    with open(source / "sparse", "wb") as f:
        f.seek(3 << 20)
        f.write(b"end")
    archive = tmp_path / "sparse.tar"
    subprocess.run(["tar", "-S", "-cf", str(archive), "-C", str(source), "sparse"], check=True)
    with tarfile.open(archive) as tar:
        assert tar.getmember("sparse").sparse is not None  # GNU tar wrote it sparse
    tree = received(tmp_path, archive.read_bytes())
    expected = (source / "sparse").read_bytes()
    assert tree.digest("/sparse") == hashlib.sha256(expected).hexdigest()
    with tree.open("/sparse") as f:
        assert f.read() == expected


@pytest.mark.parametrize(
    "entries",
    [
        [member("../../escape", b"x")],
        [member("link", kind=tarfile.SYMTYPE, link="/etc"), member("link/passwd", b"x")],
        [member("file", b"x"), member("file/under", b"y")],
        [member("hard", kind=tarfile.LNKTYPE, link="/etc/passwd")],
        [member("dir/", kind=tarfile.DIRTYPE), member("hard", kind=tarfile.LNKTYPE, link="dir")],
    ],
)
def test_what_the_extractor_refuses_the_index_refuses(tmp_path, entries):
    body = tar_of(entries)
    with pytest.raises(UnsafeLayer):
        extracted(tmp_path, body)
    with pytest.raises(context.ContextError, match="build context"):
        received(tmp_path, body)


def test_dockerignore_leaves_out_what_it_names(tmp_path):
    body = tar_of(
        [
            member(".dockerignore", b"logs\n*.tmp\n!keep.tmp\n"),
            member("logs/a.log", b"a"),
            member("x.tmp", b"x"),
            member("keep.tmp", b"k"),
            member("src/main", b"m"),
        ]
    )
    tree = received(tmp_path, body)
    context.apply_dockerignore(tree)
    assert sorted(tree.entries) == ["/", "/.dockerignore", "/keep.tmp", "/src", "/src/main"]


# -- the cache over the index, through the API ----------------------------------------------


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent"), registry) as server:
        yield server


def copy_was_cached(agent, files: list[tuple]) -> bool:
    dockerfile = member("Dockerfile", b"FROM busybox\nCOPY app /app\nRUN cat /app/main\n")
    status, data = post(agent, "/v1.50/build?t=cachekey", tar_of([dockerfile, *files]))
    assert status == 200 and b"Successfully tagged" in data, data
    step = data.split(b"Step 2/3")[1].split(b"Step 3/3")[0]
    return b"Using cache" in step


@root_only
def test_copy_hits_the_cache_for_the_same_context_and_misses_for_a_change(agent):
    base = dict(mode=0o644, uid=0, gid=0, mtime=1000)
    app = [member("app/", kind=tarfile.DIRTYPE), member("app/main", b"v1", **base)]

    def main(data: bytes = b"v1", **changed) -> list[tuple]:
        return [app[0], member("app/main", data, **{**base, **changed})]

    copy_was_cached(agent, app)
    assert copy_was_cached(agent, app)
    assert copy_was_cached(agent, main(mtime=9))  # times are not in the key, as dockerd's
    assert not copy_was_cached(agent, main(b"v2"))
    assert not copy_was_cached(agent, main(mode=0o755))
    assert not copy_was_cached(agent, main(uid=7))
    assert not copy_was_cached(agent, [*app, member("app/new", b"n", **base)])
    assert copy_was_cached(agent, [*app, member("app/new", b"n", **base)])
    assert_nothing_left(agent)


def test_a_cut_short_or_hostile_context_is_a_400_and_leaves_nothing(agent):
    body = tar_of([member("Dockerfile", b"FROM busybox\n"), member("big", os.urandom(65536))])
    status, data = post(agent, "/v1.50/build?t=cut", gzip.compress(body)[:-4096])
    assert status == 400 and b"the build context is not a readable tar archive" in data, data
    status, data = post(agent, "/v1.50/build?t=cut", body[:20000])  # in the middle of `big`
    assert status == 400 and b"the context ends in the middle of 'big'" in data, data
    hostile = tar_of([member("link", kind=tarfile.SYMTYPE, link="/"), member("link/x", b"x")])
    status, data = post(agent, "/v1.50/build?t=cut", hostile)
    assert status == 400 and b"build context entry 'link/x' goes through 'link'" in data, data
    assert agent.docker("image", "inspect", "cut").returncode != 0
    assert_nothing_left(agent)
