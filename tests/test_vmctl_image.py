"""vmctl's base images and disks: download (against a real loopback HTTP server), resolve, the
offline recipe (golden), overlays with the real qemu-img, and the built image booted for real."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import vmkit
from vmkit import FileServer

from vmctl import disk, download, image, imagerecipe, progressbar
from vmctl.errors import VmctlError

GOLDEN = Path(__file__).parent / "golden"
PAYLOAD = os.urandom(3 << 20) + b"end"  # a few chunks, so progress and resume have room
DIGEST = hashlib.sha512(PAYLOAD).hexdigest()


@pytest.fixture
def served(tmp_path: Path) -> FileServer:
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "disk.qcow2").write_bytes(PAYLOAD)
    with FileServer(tmp_path / "srv") as server:
        yield server


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------- download


def test_download_streams_verifies_and_places_read_only(served, tmp_path):
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "cache" / "disk.qcow2"
    got = download.download(served.url("disk.qcow2"), DIGEST, dest, lambda *a: seen.append(a))
    assert got == dest
    assert dest.read_bytes() == PAYLOAD
    assert stat.S_IMODE(dest.stat().st_mode) == 0o444, "a base is never written"
    assert _leftovers(dest.parent) == ["disk.qcow2"], "no .part left"
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) > 1


def test_a_cached_download_makes_no_request(served, tmp_path):
    dest = tmp_path / "disk.qcow2"
    download.download(served.url("disk.qcow2"), DIGEST, dest)
    before = list(served.log.requests)
    download.download(served.url("disk.qcow2"), DIGEST, dest)
    assert served.log.requests == before


def test_an_interrupted_download_resumes_with_a_range_request(served, tmp_path):
    dest = tmp_path / "disk.qcow2"
    served.cut_after = 1 << 20
    with pytest.raises(VmctlError, match=r"interrupted after 1048576 bytes.*run the same command"):
        download.download(served.url("disk.qcow2"), DIGEST, dest)
    part = tmp_path / "disk.qcow2.part"
    assert part.stat().st_size == 1 << 20 and not dest.exists()
    served.log.sent = 0
    download.download(served.url("disk.qcow2"), DIGEST, dest)
    assert served.log.requests[-1] == ("/disk.qcow2", "bytes=1048576-")
    assert served.log.sent == len(PAYLOAD) - (1 << 20), "only the rest was sent"
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_a_server_that_ignores_range_restarts_from_zero(tmp_path):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "disk.qcow2").write_bytes(PAYLOAD)
    dest = tmp_path / "disk.qcow2"
    (tmp_path / "disk.qcow2.part").write_bytes(b"stale bytes from elsewhere")
    with FileServer(tmp_path / "srv", honor_range=False) as server:
        download.download(server.url("disk.qcow2"), DIGEST, dest)
        assert server.log.requests == [("/disk.qcow2", "bytes=26-")]
    assert dest.read_bytes() == PAYLOAD, "the stale prefix was dropped, not appended to"


def test_a_whole_part_is_verified_without_a_new_body(served, tmp_path):
    dest = tmp_path / "disk.qcow2"
    (tmp_path / "disk.qcow2.part").write_bytes(PAYLOAD)
    download.download(served.url("disk.qcow2"), DIGEST, dest)  # the server answers 416
    assert dest.read_bytes() == PAYLOAD and served.log.sent == 0


def test_a_wrong_checksum_names_both_digests_and_leaves_nothing(served, tmp_path):
    wrong = "0" * 128
    cache = tmp_path / "cache"
    with pytest.raises(VmctlError) as err:
        download.download(served.url("disk.qcow2"), wrong, cache / "disk.qcow2")
    assert f"expected sha512 {wrong}, got {DIGEST}" in str(err.value)
    assert "deleted" in str(err.value)
    assert _leftovers(cache) == []


def test_an_unreachable_server_is_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{vmkit.free_port()}/disk.qcow2"
    with pytest.raises(VmctlError, match=r"cannot reach 127\.0\.0\.1:\d+ .*vmctl image build"):
        download.download(url, DIGEST, tmp_path / "c" / "disk.qcow2")
    assert _leftovers(tmp_path / "c") == []


def test_http_errors_and_bad_digests_are_named(served, tmp_path):
    with pytest.raises(VmctlError, match="failed: HTTP 404"):
        download.download(served.url("missing.qcow2"), DIGEST, tmp_path / "x.qcow2")
    with pytest.raises(VmctlError, match="not a SHA-512 digest"):
        download.download(served.url("disk.qcow2"), "abc", tmp_path / "x.qcow2")


def test_file_urls_and_plain_paths_are_copied_and_verified(tmp_path):
    source = tmp_path / "source image.qcow2"
    source.write_bytes(PAYLOAD)
    for url, name in ((source.as_uri(), "a"), (str(source), "b")):
        assert download.download(url, DIGEST, tmp_path / name).read_bytes() == PAYLOAD
    with pytest.raises(VmctlError, match=r"cannot read image .*nope"):
        download.download(str(tmp_path / "nope"), DIGEST, tmp_path / "c")


def test_the_default_image_is_pinned():
    assert image.DEFAULT_URL.startswith("https://cloud.debian.org/images/cloud/bookworm/")
    assert "genericcloud-amd64" in image.DEFAULT_URL and image.DEFAULT_URL.endswith(".qcow2")
    assert len(image.DEFAULT_SHA512) == 128 and int(image.DEFAULT_SHA512, 16)


# --------------------------------------------------------------------------- resolve


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VMCTL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_resolve_a_url_pinned_in_its_fragment(served, home):
    base = image.resolve(f"{served.url('disk.qcow2')}#sha512={DIGEST}")
    assert base.disk == home / "images" / f"sha512-{DIGEST[:16]}" / "disk.qcow2"
    assert base.disk.read_bytes() == PAYLOAD and base.kernel is None
    requests_made = len(served.log.requests)
    assert image.resolve(f"{served.url('disk.qcow2')}#sha512={DIGEST}") == base
    assert len(served.log.requests) == requests_made, "cached for every VM"


def test_resolve_a_url_checked_against_sha512sums_beside_it(served, home):
    (served.root / "SHA512SUMS").write_text(f"{'1' * 128}  other.qcow2\n{DIGEST}  disk.qcow2\n")
    base = image.resolve(served.url("disk.qcow2"))
    assert base.disk.read_bytes() == PAYLOAD
    assert image.read_manifest(base.disk.parent)["sha512"] == {"disk.qcow2": DIGEST}


def test_resolve_refuses_an_unverifiable_url(served, home):
    with pytest.raises(VmctlError, match=r"cannot verify .*Append '#sha512='"):
        image.resolve(served.url("disk.qcow2"))
    assert not (home / "images").exists() or not any((home / "images").iterdir())


def test_resolve_local_paths(tmp_path):
    built = tmp_path / "built"
    built.mkdir()
    for name in ("disk.qcow2", "vmlinuz", "initrd.img"):
        (built / name).write_bytes(b"x")
    fields = {"disk": "disk.qcow2", "kernel": "vmlinuz", "initrd": "initrd.img", "cmdline": "c"}
    (built / image.MANIFEST).write_text(json.dumps(fields))
    expected = image.BaseImage(built / "disk.qcow2", built / "vmlinuz", built / "initrd.img", "c")
    assert image.resolve(str(built)) == expected
    assert image.resolve(str(built / "disk.qcow2")) == expected, "sidecars found by manifest"
    assert image.resolve(str(built / "vmlinuz")) == image.BaseImage(built / "vmlinuz")
    with pytest.raises(VmctlError, match=r"no image at .*missing\.qcow2: give a qcow2 or raw"):
        image.resolve(str(tmp_path / "missing.qcow2"))
    with pytest.raises(VmctlError, match=r"directory without a manifest\.json"):
        image.resolve(str(tmp_path))
    (built / image.MANIFEST).write_text("{not json")
    with pytest.raises(VmctlError, match=r"unreadable .*delete .*built"):
        image.resolve(str(built))


# --------------------------------------------------------------------------- the recipe


def test_the_recipe_matches_the_golden_hook_script():
    script = imagerecipe.recipe_script(imagerecipe.DEFAULT_RECIPE)
    assert script == (GOLDEN / "image-recipe.sh").read_text()
    checked = subprocess.run(["sh", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr


def test_the_recipe_digest_follows_its_content():
    recipe = imagerecipe.DEFAULT_RECIPE
    assert len(recipe.digest()) == 16 and int(recipe.digest(), 16) >= 0
    assert replace(recipe, packages=(*recipe.packages, "less")).digest() != recipe.digest()
    wanted = {"linux-image-amd64", "cloud-init", "openssh-server", "python3", "dbus"}
    assert wanted <= set(recipe.packages)
    assert recipe.cmdline.startswith("root=/dev/vda rw console=ttyS0,115200")


def test_mmdebstrap_runs_the_hook_at_setup_and_customize(tmp_path):
    script = tmp_path / "it's.sh"
    argv = imagerecipe.mmdebstrap_argv(imagerecipe.DEFAULT_RECIPE, tmp_path / "root", script)
    assert argv[:4] == ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory"]
    hook = f'sh {shlex.quote(str(script))} "$1"'
    assert f"--setup-hook={hook} setup" in argv and f"--customize-hook={hook} customize" in argv
    assert argv[-2:] == ["bookworm", str(tmp_path / "root")]


def test_build_without_its_tools_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(
        VmctlError, match=r"mmdebstrap, mke2fs, qemu-img not found.*apt-get install"
    ):
        image.build(tmp_path / "images")
    assert _leftovers(tmp_path / "images") == []


def test_a_built_image_is_reused_without_running_anything(tmp_path, monkeypatch):
    cached = tmp_path / f"built-{imagerecipe.DEFAULT_RECIPE.digest()}"
    cached.mkdir()
    (cached / image.MANIFEST).write_text(json.dumps({"disk": "disk.qcow2", "cmdline": "c"}))
    (tmp_path / ".build-killed" / "rootfs").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no tool could run
    assert image.build(tmp_path) == image.BaseImage(cached / "disk.qcow2", cmdline="c")
    assert (tmp_path / ".build-killed").exists(), "cache hits touch nothing"


def test_a_killed_builds_leftovers_are_removed_by_the_next_build(tmp_path, monkeypatch):
    (tmp_path / ".build-killed" / "rootfs").mkdir(parents=True)
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("rm", "mke2fs", "qemu-img"):  # everything but mmdebstrap
        (tools / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(tools))
    with pytest.raises(VmctlError, match="mmdebstrap not found"):
        image.build(tmp_path)
    assert _leftovers(tmp_path) == ["bin"]


def test_build_without_space_refuses_before_starting(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64M", "tmpfs", str(mnt)], check=True)
    try:
        with pytest.raises(VmctlError, match=r"not enough space .* MiB free, 3072 MiB needed"):
            image.build(mnt)
        assert _leftovers(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_failed_build_shows_the_tools_output_and_leaves_nothing(tmp_path):
    recipe = replace(imagerecipe.DEFAULT_RECIPE, suite="no-such-suite")
    stages: list[str] = []
    with pytest.raises(VmctlError) as err:
        image.build(tmp_path, stages.append, recipe=recipe)
    message = str(err.value)
    assert re.match(r"installing Debian packages failed \(mmdebstrap exited with \d+\):\n", message)
    assert "no-such-suite Release" in message, "the tool's own words are in the tail"
    assert stages[0] == "installing Debian packages"
    assert _leftovers(tmp_path) == []


def test_progress_bar_renders_for_terminals_and_logs():
    assert progressbar.render("img", 512 << 20, 1024 << 20, width=10) == (
        "img [#####-----]  50%  512.0/1024.0 MiB"
    )
    assert progressbar.render("img", 3 << 20, None) == "img  3.0 MiB"
    out = io.StringIO()
    bar = progressbar.ProgressBar("dl", out, width=4)
    for done in range(0, 101, 5):
        bar(done, 100)
    bar.message("done")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "dl [----]   0%  0.0/0.0 MiB" and lines[-2].startswith("dl [####] 100%")
    assert len(lines) == 12 and lines[-1] == "dl: done", "a line per 10% when not a terminal"


def test_progress_bar_redraws_one_line_on_a_terminal():
    leader, follower = os.openpty()
    with open(follower, "w") as tty:
        bar = progressbar.ProgressBar("dl", tty, width=4)
        bar(50, 100)
        bar(100, 100)
        bar.close()
    shown = b""
    with contextlib.suppress(OSError):  # EIO: the follower closed, and all of it read
        while chunk := os.read(leader, 65536):  # (it reaches us in pieces, when it will)
            shown += chunk
    os.close(leader)
    shown = shown.decode()
    assert shown.count("\rdl [") == 2 and shown.endswith("\n") and "dl [####] 100%" in shown


# --------------------------------------------------------------------------- disks


@pytest.fixture
def base_qcow2(tmp_path) -> Path:
    path = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1G"], check=True)
    path.chmod(0o444)
    return path


def test_overlay_is_backed_by_the_read_only_base(base_qcow2, tmp_path):
    (tmp_path / "vm").mkdir()
    dest = disk.create_overlay(image.BaseImage(base_qcow2), tmp_path / "vm" / "disk.qcow2", 3)
    got = disk.info(dest)
    assert (got.format, got.virtual_size, got.backing_file) == ("qcow2", 3 << 30, str(base_qcow2))
    assert 0 < got.actual_size < 1 << 20, "an empty overlay is tiny"
    assert _leftovers(dest.parent) == ["disk.qcow2"]
    with pytest.raises(VmctlError, match="already exists: delete the VM"):
        disk.create_overlay(base_qcow2, dest, 3)


def test_overlay_smaller_than_its_base_is_refused(tmp_path):
    big = tmp_path / "big.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(big), "5G"], check=True)
    with pytest.raises(VmctlError, match="a 4 GiB disk is smaller than its base image \\(5 GiB\\)"):
        disk.create_overlay(big, tmp_path / "d.qcow2", 4)
    assert not (tmp_path / "d.qcow2").exists()
    assert disk.info(disk.create_overlay(big, tmp_path / "d.qcow2", 5)).backing_file == str(big)


def test_grow_and_refuse_to_shrink(base_qcow2, tmp_path):
    dest = disk.create_overlay(base_qcow2, tmp_path / "disk.qcow2", 2)
    disk.grow(dest, 4)
    assert disk.info(dest).virtual_size == 4 << 30
    disk.grow(dest, 4)  # same size: nothing to do
    with pytest.raises(VmctlError, match=r"cannot shrink .*disk\.qcow2 from 4 GiB to 3 GiB"):
        disk.grow(dest, 3)
    assert disk.info(dest).virtual_size == 4 << 30
    with pytest.raises(VmctlError, match="no disk image at"):
        disk.info(tmp_path / "nope.qcow2")


def test_verify_base_hashes_once_then_trusts_its_stamp(tmp_path):
    directory = tmp_path / "img"
    directory.mkdir()
    (directory / "disk.qcow2").write_bytes(PAYLOAD)
    manifest = {"disk": "disk.qcow2", "sha512": {"disk.qcow2": DIGEST}}
    (directory / image.MANIFEST).write_text(json.dumps(manifest))
    base = image.load(directory)
    disk.verify_base(base)
    assert (directory / disk.VERIFIED_STAMP).is_file()
    st = (directory / "disk.qcow2").stat()
    with open(directory / "disk.qcow2", "r+b") as f:  # same size, same mtime: only a full check
        f.write(b"X")
    os.utime(directory / "disk.qcow2", ns=(st.st_atime_ns, st.st_mtime_ns))
    disk.verify_base(base)
    with pytest.raises(VmctlError, match=r"does not match its manifest .*delete .*img"):
        disk.verify_base(base, full=True)
    (directory / "disk.qcow2").touch()
    with pytest.raises(VmctlError, match="does not match its manifest"):
        disk.verify_base(base)
    disk.verify_base(image.BaseImage(tmp_path / "no-manifest.qcow2"))  # nothing to check


# --------------------------------------------------------------------------- the real image


@pytest.mark.slow
def test_the_built_image_boots_to_ssh_and_cloud_init_done(tmp_path):
    started = time.monotonic()
    base = vmkit.built_image()
    build_seconds = time.monotonic() - started
    again = time.monotonic()
    assert vmkit.built_image() == base and time.monotonic() - again < 2, "cached"
    _check_built(base)
    with vmkit.booted(base, tmp_path, disk_gib=4) as guest:
        client = guest.connect(timeout=300)
        ssh_ready = time.monotonic() - guest.started
        result = _wait_for_cloud_init(client, guest)
        cloud_init_done = time.monotonic() - guest.started
        _check_guest(client, result)
        time.sleep(20)  # let boot-time work settle before measuring idle memory
        used = int(vmkit.run(client, "free -m").splitlines()[1].split()[2])
        client.close()
    assert used <= 150, f"the idle guest uses {used} MiB (goal: 150 MiB at most)"
    assert " login: " in guest.serial.read_text(errors="replace"), "a getty on the serial console"
    print(
        f"\nbuild {build_seconds:.0f} s (0 when cached); SSH ready {ssh_ready:.0f} s; cloud-init "
        f"done {cloud_init_done:.0f} s; idle used memory {used} MiB; "
        f"image {base.disk.stat().st_size >> 20} MiB"
    )


def _check_built(base: image.BaseImage) -> None:
    manifest = image.read_manifest(base.disk.parent)
    for name, digest in manifest["sha512"].items():
        path = base.disk.parent / name
        assert download.file_sha512(path) == digest and not path.stat().st_mode & 0o222
    assert set(manifest["sha512"]) == {"disk.qcow2", "vmlinuz", "initrd.img"}
    assert manifest["recipe"] == imagerecipe.DEFAULT_RECIPE.digest()
    assert base.kernel.is_file() and base.initrd.is_file()
    assert base.cmdline == imagerecipe.DEFAULT_RECIPE.cmdline
    assert disk.info(base.disk).format == "qcow2"
    disk.verify_base(base, full=True)


def _wait_for_cloud_init(client, guest, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = vmkit.run(client, "cat /run/cloud-init/result.json 2>/dev/null || true")
        if out.strip():
            return json.loads(out)
        time.sleep(2)
    raise AssertionError(f"cloud-init did not finish in {timeout} s; see {guest.serial}")


def _check_guest(client, result: dict) -> None:
    assert result["v1"]["errors"] == [], result
    assert "Traceback" not in vmkit.run(client, "cat /var/log/cloud-init.log")
    assert "status: done" in vmkit.run(client, "cloud-init status")
    size = int(vmkit.run(client, "df -B1 --output=size / | tail -1"))
    assert size > 3.5 * (1 << 30), f"the root fs grew to the 4 GiB overlay ({size} bytes)"
    assert vmkit.run(client, "python3 --version").startswith("Python 3.11")
    assert vmkit.run(client, "stat -fc %T /sys/fs/cgroup").strip() == "cgroup2fs"
    assert vmkit.run(client, "hostname").strip() == "vmctl-imgtest", "set over D-Bus"
    assert vmkit.run(client, "sudo -n id -u").strip() == "0"
    assert "127.0.0.53" in vmkit.run(client, "cat /etc/resolv.conf"), "systemd-resolved's stub"
    assert vmkit.run(client, "getent hosts deb.debian.org").strip(), "DNS resolves"
    assert vmkit.run(client, "systemctl is-system-running || true").strip() == "running"
    timers = vmkit.run(client, "systemctl list-timers --no-legend")
    assert "apt-daily" not in timers, timers
