"""A container's own mounts: the runtime's mount step (runtime/mounts.py), run for real, and
its pure parts (mount options, Docker's MountPoint shapes)."""

from __future__ import annotations

import os
import stat
import subprocess

import imagekit as ik
import pytest
from agentkit import pull
from runtimekit import NOTHING, busybox_image, leftovers, make_runtime, run
from vmctl_agent import syscalls as sc
from vmctl_agent.runtime.mounts import Mount, parse_options

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the runtime needs root (CI is root)")


@pytest.fixture(scope="module")
def image(registry) -> str:
    ik.RegistryClient(registry.url).push_image("mounts/busybox", "v1", busybox_image())
    return f"{registry.host}/mounts/busybox:v1"


@pytest.fixture(scope="module")
def rt(tmp_path_factory, registry, image):
    runtime = make_runtime(tmp_path_factory.mktemp("runtime-mounts"), registry, image)
    yield runtime
    for container in runtime.list(all=True):
        runtime.remove(container.id, force=True)
    for directory in runtime.cgroups.path("x"):  # the test's own parent cgroups
        if directory.parent.exists():
            directory.parent.rmdir()


def mount_lines(under) -> list[str]:
    """This session's mounts on the host (other sessions on a shared machine mount too)."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(under) in line]


# -- the mount step, for real ------------------------------------------------------------------


@root_only
def test_binds_tmpfs_and_order_inside_a_container(rt, image, tmp_path, tmp_path_factory):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "f").write_text("dir\n")
    (tmp_path / "file").write_text("file\n")
    before = mount_lines(tmp_path_factory.getbasetemp())
    mounts = (
        Mount("tmpfs", "/srv", options="nosuid,nodev,size=1m,mode=700"),
        Mount("bind", "/srv/dir", str(tmp_path / "dir"), read_only=True),
        Mount("bind", "/etc/made/deep/file", str(tmp_path / "file")),
    )
    script = (
        "cat /srv/dir/f /etc/made/deep/file; stat -c %a /srv; "
        "touch /srv/dir/x 2>&1; echo w >> /etc/made/deep/file"
    )
    ran = run(rt, image, "sh", "-c", script, mounts=mounts)
    assert ran.stdout.splitlines()[:3] == ["dir", "file", "700"]
    assert "Read-only file system" in ran.stdout
    assert (tmp_path / "file").read_text() == "file\nw\n"
    rt.remove(ran.container.id)
    assert mount_lines(tmp_path_factory.getbasetemp()) == before
    assert leftovers(rt, ran.container.id) == NOTHING


@root_only
def test_copy_up_fills_only_an_empty_volume(rt, image, tmp_path):
    volume = tmp_path / "vol"
    volume.mkdir()
    up = (Mount("volume", "/bin", str(volume), name="v", copy_up=True),)
    ran = run(rt, image, "/bin/busybox", "ls", "/bin", mounts=up)
    assert "busybox" in ran.stdout.split() and (volume / "sh").is_symlink()
    (volume / "sh").unlink()
    run(rt, image, "/bin/busybox", "true", mounts=up)
    assert not (volume / "sh").exists()  # not empty: left as the user left it


@root_only
def test_slave_propagation_lets_the_hosts_new_mounts_in(rt, image, tmp_path):
    """rslave: a mount made on the host after the start reaches the container; rprivate
    does not. The source must sit on a shared mount, as in the VM (systemd makes / shared)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        (shared / "later").mkdir()
        seen = {}
        for mode in ("rslave", "rprivate"):
            m = Mount("bind", "/s", str(shared), propagation=mode)
            wait = "until [ -e /s/go ]; do sleep 0.05; done; ls /s/later"  # told, never timed
            c = rt.create(_options(image, "sh", "-c", wait, mounts=(m,)))
            rt.start(c.id)
            seen[mode] = c
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "late", str(shared / "later")],
                       check=True)  # fmt: skip
        (shared / "later" / "arrived").write_text("")
        (shared / "go").write_text("")  # on the shared tmpfs itself: both containers see it
        for mode, c in seen.items():
            rt.wait(c.id, timeout=30)
            out = b"".join(e.data for e in rt.logs(c.id)).decode()
            assert ("arrived" in out) == (mode == "rslave"), mode
            rt.remove(c.id)
    finally:
        subprocess.run(["umount", "-R", str(shared)], check=True)


@root_only
def test_copy_up_makes_fifos_and_devices_again_never_reads_them(rt, registry, tmp_path):
    """A fifo would block a reader forever, /dev/zero never ends: both are made, not read."""
    special = ik.tar_bytes([
        ik.directory("seeded"),
        ik.TarEntry("seeded/pipe", "fifo", mode=0o600),
        ik.TarEntry("seeded/zero", "char", mode=0o666, devmajor=1, devminor=5),
    ])  # fmt: skip
    layers = [ik.busybox_layer(sorted(ik.busybox_applets() - {"busybox"})), special]
    image = ik.build_image(layers, config={"Env": [ik.DEFAULT_PATH]})
    ik.RegistryClient(registry.url).push_image("mounts/special", "v1", image)
    ref = f"{registry.host}/mounts/special:v1"
    pull(rt.images, ref)
    volume = tmp_path / "vol"
    volume.mkdir()
    up = (Mount("volume", "/seeded", str(volume), name="s", copy_up=True),)
    assert run(rt, ref, "ls", "/seeded", mounts=up).stdout.split() == ["pipe", "zero"]
    assert stat.S_ISFIFO((volume / "pipe").lstat().st_mode)
    zero = (volume / "zero").lstat()
    assert (
        stat.S_ISCHR(zero.st_mode) and os.major(zero.st_rdev) == 1 and os.minor(zero.st_rdev) == 5
    )


def _options(image, *cmd, **kw):
    from vmctl_agent.runtime.spec import CreateOptions

    return CreateOptions(image=image, cmd=cmd, **kw)


@root_only
def test_a_missing_source_fails_the_start_and_leaves_nothing(rt, image, tmp_path, tmp_path_factory):
    before = mount_lines(tmp_path_factory.getbasetemp())
    gone = tmp_path / "gone"
    gone.mkdir()
    c = rt.create(_options(image, "true", mounts=(Mount("bind", "/g", str(gone)),)))
    gone.rmdir()
    with pytest.raises(Exception, match="No such file or directory"):
        rt.start(c.id)
    rt.remove(c.id)
    assert mount_lines(tmp_path_factory.getbasetemp()) == before
    assert leftovers(rt, c.id) == NOTHING


# -- pure: options, shapes, parsing ------------------------------------------------------------


def test_parse_options_splits_flags_from_data_later_ones_winning():
    flags, data = parse_options("noexec,nosuid,nodev,exec,size=1m,mode=1777,ro")
    assert flags == sc.MS_NOSUID | sc.MS_NODEV | sc.MS_RDONLY
    assert data == "size=1m,mode=1777"
    assert parse_options("bind") == (sc.MS_BIND, "")


def test_inspect_shapes_per_type():
    volume = Mount("volume", "/d", "/v/_data", name="v", driver="local", mode="z")
    assert volume.inspect() == {
        "Type": "volume", "Name": "v", "Source": "/v/_data", "Destination": "/d",
        "Driver": "local", "Mode": "z", "RW": True, "Propagation": "",
    }  # fmt: skip
    assert list(Mount("bind", "/d", "/s", propagation="rprivate").inspect()) == [
        "Type", "Source", "Destination", "Mode", "RW", "Propagation",
    ]  # fmt: skip
