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
