"""Reverse SFTP's host side (vmctl/sftpshare.py) against the real file system: what the
guest's sshfs may do in a shared folder, and what it may not (leave the folder, write to a
read-only share). The guest's sshfs meets it over SSH in test_vmctl_shares_vm.py."""

from __future__ import annotations

import os

import paramiko
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_PERMISSION_DENIED

from vmctl.sftpshare import Folder, mount_command
from vmctl.shares import Share


def attrs(mode: int | None = None) -> paramiko.SFTPAttributes:
    made = paramiko.SFTPAttributes()
    made.st_mode = mode
    return made


def test_files_are_made_read_renamed_and_removed_as_the_user(tmp_path):
    folder = Folder(None, str(tmp_path), read_only=False)
    handle = folder.open(f"{tmp_path}/a.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, attrs(0o640))
    assert handle.write(0, b"hello") == SFTP_OK
    handle.close()
    assert (tmp_path / "a.txt").read_bytes() == b"hello"
    assert (tmp_path / "a.txt").stat().st_uid == os.geteuid()  # the user's, whoever asked
    assert oct((tmp_path / "a.txt").stat().st_mode & 0o777) == "0o640"
    assert [a.filename for a in folder.list_folder(str(tmp_path))] == ["a.txt"]
    assert folder.mkdir(f"{tmp_path}/d", attrs(0o755)) == SFTP_OK
    (tmp_path / "b.txt").write_text("b")
    assert folder.rename(f"{tmp_path}/a.txt", f"{tmp_path}/b.txt") == SFTP_FAILURE  # never over
    assert folder.posix_rename(f"{tmp_path}/a.txt", f"{tmp_path}/b.txt") == SFTP_OK
    assert (tmp_path / "b.txt").read_bytes() == b"hello"
    assert folder.remove(f"{tmp_path}/b.txt") == SFTP_OK
    assert folder.remove(f"{tmp_path}/b.txt") == SFTP_NO_SUCH_FILE
    assert folder.rmdir(f"{tmp_path}/d") == SFTP_OK
    assert os.listdir(tmp_path) == []


def test_nothing_outside_the_folder_and_no_write_to_a_read_only_one(tmp_path):
    inside = tmp_path / "shared"
    inside.mkdir()
    (inside / "kept.txt").write_text("kept")
    (tmp_path / "secret").write_text("no")
    folder = Folder(None, str(inside), read_only=True)
    assert folder.stat(f"{inside}/../secret") == SFTP_PERMISSION_DENIED
    assert folder.list_folder(str(tmp_path)) == SFTP_PERMISSION_DENIED
    assert folder.open(f"{inside}/kept.txt", os.O_RDONLY, attrs()).read(0, 4) == b"kept"
    writes = [
        folder.open(f"{inside}/new", os.O_WRONLY | os.O_CREAT, attrs(0o644)),
        folder.remove(f"{inside}/kept.txt"),
        folder.mkdir(f"{inside}/d", attrs(0o755)),
        folder.chattr(f"{inside}/kept.txt", attrs(0o777)),
    ]
    assert writes == [SFTP_PERMISSION_DENIED] * 4
    assert sorted(os.listdir(inside)) == ["kept.txt"]


def test_no_link_leads_out_of_the_folder(tmp_path):
    """The guest's kernel resolves links itself, so sshfs never sends a path through one; a
    path that does (a guest's root speaking SFTP itself) must not leave the folder."""
    inside = tmp_path / "shared"
    inside.mkdir()
    (inside / "kept.txt").write_text("kept")
    (tmp_path / "secret").write_text("no")
    os.chmod(tmp_path / "secret", 0o600)
    os.symlink(tmp_path, inside / "out")  # the user's own link out
    folder = Folder(None, str(inside), read_only=False)
    assert folder.symlink("/", f"{inside}/root") == SFTP_OK  # one the VM makes
    assert os.readlink(inside / "root") == "/"
    out = f"{inside}/out"
    denied = [
        folder.open(f"{out}/secret", os.O_RDONLY, attrs()),
        folder.open(f"{out}/made", os.O_WRONLY | os.O_CREAT, attrs(0o644)),
        folder.open(f"{inside}/root{tmp_path}/secret", os.O_RDONLY, attrs()),
        folder.stat(out),
        folder.stat(f"{out}/secret"),
        folder.list_folder(out),
        folder.chattr(f"{out}/secret", attrs(0o777)),
        folder.remove(f"{out}/secret"),
        folder.mkdir(f"{out}/d", attrs(0o755)),
        folder.posix_rename(f"{inside}/kept.txt", f"{out}/taken"),
        folder.symlink("/", f"{out}/planted"),
    ]
    assert denied == [SFTP_PERMISSION_DENIED] * len(denied)
    assert sorted(os.listdir(tmp_path)) == ["secret", "shared"]
    assert oct(os.stat(tmp_path / "secret").st_mode & 0o777) == "0o600"
    # a dangling link out is not a way to make a file out there either
    os.symlink(tmp_path / "dangling", inside / "dangle")
    made = folder.open(f"{inside}/dangle", os.O_WRONLY | os.O_CREAT, attrs(0o644))
    assert made == SFTP_PERMISSION_DENIED and not (tmp_path / "dangling").exists()
    # the links themselves are the guest's to see and remove, and links inside lead inside
    assert folder.lstat(out).st_mode & 0o170000 == 0o120000
    assert folder.readlink(out) == str(tmp_path)
    os.symlink("kept.txt", inside / "rel")
    assert folder.open(f"{inside}/rel", os.O_RDONLY, attrs()).read(0, 4) == b"kept"
    assert folder.remove(out) == SFTP_OK and (tmp_path / "secret").exists()


def test_an_open_files_attributes_change_that_file_even_if_its_path_became_a_link(tmp_path):
    inside = tmp_path / "shared"
    inside.mkdir()
    (tmp_path / "secret").write_text("no")
    os.chmod(tmp_path / "secret", 0o600)
    folder = Folder(None, str(inside), read_only=False)
    handle = folder.open(f"{inside}/f", os.O_RDWR | os.O_CREAT, attrs(0o644))
    os.replace(inside / "f", inside / "moved")
    os.symlink(tmp_path / "secret", inside / "f")
    assert handle.chattr(attrs(0o666)) == SFTP_OK
    handle.close()
    assert oct(os.stat(tmp_path / "secret").st_mode & 0o777) == "0o600"
    assert oct(os.stat(inside / "moved").st_mode & 0o777) == "0o666"


def test_the_guest_mounts_with_sshfs_in_slave_mode_read_only_when_shared_so():
    share = Share("/home/me/my code", "/home/me/my code", True, "vmctl0")
    assert mount_command(share) == (
        "sudo -n mkdir -p '/home/me/my code' && exec sudo -n sshfs -f -o "
        "slave,allow_other,ro ':/home/me/my code' '/home/me/my code'"
    )


def test_setting_a_files_own_times_keeps_their_nanoseconds(tmp_path):
    """edits.py raises events in the guest by setting times the file already has; SFTP v3
    carries them in whole seconds, which must not cut the host's."""
    target = tmp_path / "app.py"
    target.write_text("x")
    os.utime(target, ns=(1_700_000_000_123_456_789, 1_700_000_000_987_654_321))
    folder = Folder(None, str(tmp_path), read_only=False)
    same = paramiko.SFTPAttributes()
    same.st_atime, same.st_mtime = 1_700_000_000, 1_700_000_000
    assert folder.chattr(str(target), same) == SFTP_OK
    st = os.lstat(target)
    assert (st.st_atime_ns, st.st_mtime_ns) == (
        1_700_000_000_123_456_789,
        1_700_000_000_987_654_321,
    )
    later = paramiko.SFTPAttributes()
    later.st_atime, later.st_mtime = 1_700_000_100, 1_700_000_200
    assert folder.chattr(str(target), later) == SFTP_OK
    assert (os.lstat(target).st_atime, os.lstat(target).st_mtime) == (1_700_000_100, 1_700_000_200)
