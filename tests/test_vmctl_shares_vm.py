"""The user's folders in a real VM (issue 14, item 3), as a user meets them: `vmctl start`
shares a folder of pytest's temporary folder (and one folder read-only) at the same path,
and the docker CLI on the host bind-mounts it into containers. The shared `user_vm` runs each
driver: the libvirt driver's virtiofs is libvirt's, the qemu driver's runs virtiofsd itself."""

from __future__ import annotations

import os

import pytest
import uservm
from agentserver import docker_cli
from uservm import ok

pytestmark = pytest.mark.slow


def run(vm, *args: str):
    return vm.docker("run", "--rm", *args)


def test_a_host_folder_is_in_containers_at_the_same_path_and_writes_go_both_ways(
    user_vm, vm_tmp_path
):
    folder = vm_tmp_path
    (folder / "from-host.txt").write_text("edited on the host\n")
    script = f"cat {folder}/from-host.txt; echo made in a container > {folder}/back.txt"
    out = ok(run(user_vm, "-v", f"{folder}:{folder}", "busybox", "sh", "-c", script))
    assert out == "edited on the host\n"
    assert (folder / "back.txt").read_text() == "made in a container\n"
    (folder / "back.txt").write_text("changed on the host\n")
    again = ok(run(user_vm, "-v", f"{folder}:/src", "busybox", "cat", "/src/back.txt"))
    assert again == "changed on the host\n"


def test_a_read_only_share_is_read_only_in_the_vm_and_in_containers(user_vm, tmp_path_factory):
    folder = uservm.read_only_root(tmp_path_factory.getbasetemp())
    (folder / "kept.txt").write_text("kept\n")
    script = "cat /data/kept.txt; touch /data/new"
    done = run(user_vm, "-v", f"{folder}:/data", "busybox", "sh", "-c", script)
    assert (done.returncode, done.stdout) == (1, "kept\n")
    assert "Read-only file system" in done.stderr
    in_vm = user_vm.ssh("sudo", "-n", "touch", f"{folder}/new")
    assert in_vm.returncode == 1 and "Read-only file system" in in_vm.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["kept.txt"]


def test_a_bind_of_a_folder_not_shared_is_mounts_denied_and_nothing_is_made(user_vm):
    elsewhere = "/srv/vmctl-not-shared"
    before = ok(user_vm.docker("ps", "-aq"))
    done = run(user_vm, "-v", f"{elsewhere}:/x", "busybox", "true")
    assert done.returncode == 125
    assert f"mounts denied: the path {elsewhere} is not shared from the host" in done.stderr
    assert ok(user_vm.docker("ps", "-aq")) == before
    assert user_vm.ssh("test", "-e", elsewhere).returncode == 1  # no empty folder made


def test_host_edits_wake_an_inotify_watcher_in_a_container(
    user_vm, registry, tmp_path, vm_tmp_path
):
    """Made, changed, renamed and deleted on the host: each wakes the container's watcher
    (a real inotify watcher, tests/tools/inotifywatch.c) on the same paths."""
    import subprocess

    import watchkit

    watchkit.push_image(registry, watchkit.build(tmp_path / "inotifywatch"))
    folder, gone = vm_tmp_path / "src", vm_tmp_path / "src" / "gone"
    gone.mkdir(parents=True)
    (gone / "old.txt").write_text("old\n")
    name = f"watch-{os.getpid()}"
    ok(user_vm.docker("run", "-d", "--name", name, "-v", f"{folder}:{folder}", "inotify",
                      "/bin/inotifywatch", str(folder), str(gone)))  # fmt: skip
    env = {**os.environ, "DOCKER_HOST": user_vm.docker_host}
    logs = subprocess.Popen(
        [docker_cli(), "logs", "-f", name], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        output = watchkit.Lines(logs.stdout)
        assert output.next() == "watching"
        (gone / "old.txt").unlink()  # nothing else touches this folder: this is the deletion's
        wait_for(output, f"a\t{gone}")
        (folder / "app.py").write_text("print(1)\n")
        wait_for(output, f"a\t{folder}\tapp.py")
        (folder / "app.py").write_text("print(2)\n")
        wait_for(output, f"a\t{folder}\tapp.py")
        os.rename(folder / "app.py", folder / "main.py")
        wait_for(output, f"a\t{folder}\tmain.py")
        # what a container writes there the watcher hears from the guest's kernel, once: the
        # host agent does not carry it back as a host edit (an echo, raised again)
        ok(run(user_vm, "-v", f"{folder}:{folder}", "busybox", "sh", "-c",
               f"echo made in the VM > {folder}/from-vm.txt"))  # fmt: skip
        (folder / "after.txt").write_text("the host's, after it\n")
        heard = wait_for(output, f"a\t{folder}\tafter.txt", raised_only=False)
        assert f"w\t{folder}\tfrom-vm.txt" in heard
        assert f"a\t{folder}\tfrom-vm.txt" not in heard
    finally:
        logs.kill()
        logs.wait()
        ok(user_vm.docker("rm", "-f", name))


def wait_for(output, line: str, raised_only: bool = True) -> list[str]:
    """Lines until `line` (earlier steps may still be saying theirs): only the events edits.py
    raises, unless something in the VM wrote too."""
    heard = [output.next()]
    while heard[-1] != line:
        assert not raised_only or heard[-1].startswith("a\t"), heard[-1]
        heard.append(output.next())
    return heard


def test_the_shares_are_mounted_again_after_a_restart(user_vm, tmp_path_factory, vm_tmp_path):
    """Last in this file: it stops the shared VM, and starts it again as it found it."""
    ok(user_vm.vmctl("stop"))
    ok(user_vm.vmctl("start"))
    shared = uservm.shared_root(tmp_path_factory.getbasetemp())
    shown = ok(user_vm.vmctl("status"))
    assert f"  shared {shared} at {shared} over virtiofs\n" in shown
    assert "over virtiofs (read-only)\n" in shown
    folder = vm_tmp_path
    (folder / "after.txt").write_text("after the restart\n")
    out = ok(run(user_vm, "-v", f"{folder}:{folder}", "busybox", "cat", f"{folder}/after.txt"))
    assert out == "after the restart\n"


@pytest.fixture
def own_vm_disk():
    import vmkit

    return vmkit.built_image().disk


def test_sftp_and_9p_share_as_the_user_and_a_switch_between_them_keeps_the_folders(
    registry, tmp_path, own_vm_disk
):
    """One VM of our own (libvirt): over sftp the folder is there, written both ways with the
    user's ownership, read-only where shared so; switched to 9p (the built image's generic
    kernel has it) and back, the same folders are there again, each time over the transport
    `vmctl status` names."""
    from uservm import started

    home, folder, ro = tmp_path / "home", tmp_path / "code", tmp_path / "ro"
    for made in (home, folder, ro):
        made.mkdir()
    (ro / "kept.txt").write_text("kept\n")
    name = f"shares-sftp-{os.getpid()}"
    flags = ("--mount", str(folder), "--mount", f"{ro}:ro", "--share-transport", "sftp")
    with started(home, name, "libvirt", own_vm_disk, registry, *flags) as vm:
        for transport in ("sftp", "9p", "sftp"):
            if transport != "sftp" or (folder / "back.txt").exists():
                ok(vm.vmctl("stop"))
                ok(vm.vmctl("config", "--share-transport", transport))
                ok(vm.vmctl("start"))
            status = ok(vm.vmctl("status"))
            assert f"  shared {ro} at {ro} over {transport} (read-only)\n" in status
            (folder / "host.txt").write_text(f"from the host, {transport}\n")
            made = f"echo from a container, {transport} > {folder}/back.txt"
            links = f"ln -sfn host.txt {folder}/rel; ln -sfn / {folder}/abs; cat {folder}/rel"
            script = f"cat {folder}/host.txt; {made}; {links}"
            # sftp: any user in a container writes as the user running vmctl (sshfs checks
            # no permissions); 9p: the guest checks the host's modes, so root writes here
            user = "1234:1234" if transport == "sftp" else "0:0"
            as_someone = ("--user", user, "-v", f"{folder}:{folder}", "busybox")
            assert (
                ok(run(vm, *as_someone, "sh", "-c", script)) == 2 * f"from the host, {transport}\n"
            )
            # links are made as asked and followed in the guest (sftp: never on the host)
            assert (os.readlink(folder / "rel"), os.readlink(folder / "abs")) == ("host.txt", "/")
            back = folder / "back.txt"
            assert back.read_text() == f"from a container, {transport}\n"
            # whoever made it in the container, it belongs to the user running vmctl (sftp) or
            # QEMU (9p, security_model=none) on the host: here both are this test's user
            assert (back.stat().st_uid, back.stat().st_gid) == (os.getuid(), os.getgid())
            denied = run(vm, "-v", f"{ro}:/data", "busybox", "touch", "/data/new")
            assert denied.returncode == 1 and "Read-only file system" in denied.stderr
            assert sorted(p.name for p in ro.iterdir()) == ["kept.txt"]
        fstab = ok(vm.ssh("cat", "/etc/fstab"))
        assert " 9p " not in fstab  # back on sftp, no 9p line is left to mount at boot
