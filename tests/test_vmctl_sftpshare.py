"""Reverse SFTP's host side (vmctl/sftpserver.py) against the real file system: what the
guest's sshfs may do in a shared folder, and what it may not (leave the folder, write to a
read-only share). Here the guest's sshfs itself mounts a folder on this machine through the
server, and paramiko's SFTP client speaks to it directly for what sshfs would never send;
the guest's sshfs in a VM meets it over SSH in test_vmctl_shares_vm.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time

import paramiko
import pytest

from vmctl import sftpserver
from vmctl.sftpshare import mount_command
from vmctl.shares import Share


@contextlib.contextmanager
def serving(folder, read_only: bool = False):
    """A Server of `folder` answering on one end of a socket pair, in a thread; yields it and
    the other end, for a client."""
    ours, theirs = socket.socketpair()
    server = sftpserver.Server(sftpserver.Folder(str(folder), read_only))

    def serve() -> None:
        with contextlib.suppress(OSError):  # an answer after the client has gone
            server.serve(ours.recv, ours.sendall)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server, theirs
    finally:
        theirs.close()
        thread.join(timeout=60)
        ours.close()


@contextlib.contextmanager
def served(folder, read_only: bool = False):
    """A paramiko SFTP client of a Server of `folder`."""
    with serving(folder, read_only) as (_server, theirs):
        client = paramiko.SFTPClient(_Named(theirs))
        try:
            yield client
        finally:
            client.close()


class _Named:
    """A socket as paramiko's SFTP client takes one (it logs a channel's name)."""

    def __init__(self, sock: socket.socket) -> None:
        self.send, self.recv, self.close = sock.send, sock.recv, sock.close

    def get_name(self) -> str:
        return "test"


@contextlib.contextmanager
def sshfs(folder, mountpoint, read_only: bool = False):
    """The guest's `sshfs -o slave`, here, its stdin and stdout a socket to a Server."""
    assert shutil.which("sshfs"), "sshfs is missing: scripts/install.sh installs it"
    with serving(folder, read_only) as (server, theirs):
        options = "slave" + (",ro" if read_only else "")
        sshfs = subprocess.Popen(
            ["sshfs", "-f", "-o", options, f":{folder}", str(mountpoint)],
            stdin=theirs, stdout=theirs, stderr=subprocess.PIPE,
        )  # fmt: skip
        theirs.close()  # sshfs's alone now: its end is the stream's end
        try:
            deadline = time.monotonic() + 120
            while not os.path.ismount(mountpoint):
                assert sshfs.poll() is None, sshfs.stderr.read().decode()
                assert time.monotonic() < deadline, "sshfs did not mount"
                time.sleep(0.05)
            yield server
        finally:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
            try:
                sshfs.wait(timeout=60)
            finally:
                sshfs.kill()
                sshfs.stderr.close()


def test_sshfs_makes_reads_renames_links_and_removes_files_as_the_user(tmp_path):
    folder, mnt = tmp_path / "shared", tmp_path / "mnt"
    folder.mkdir()
    mnt.mkdir()
    (folder / "from-host.txt").write_text("edited on the host\n")
    with sshfs(folder, mnt) as server:
        at = mnt
        assert (at / "from-host.txt").read_text() == "edited on the host\n"
        with open(at / "a.txt", "w") as made:
            made.write("hello")
            made.flush()
            os.fsync(made.fileno())  # fsync@openssh.com
        assert (folder / "a.txt").read_text() == "hello"
        assert (folder / "a.txt").stat().st_uid == os.geteuid()  # this process's user
        (folder / "b.txt").write_text("b")
        os.replace(at / "a.txt", at / "b.txt")  # over a file: posix-rename@openssh.com
        assert (folder / "b.txt").read_text() == "hello"
        os.link(at / "b.txt", at / "c.txt")  # hardlink@openssh.com
        assert (folder / "b.txt").stat().st_nlink == 2
        os.symlink("b.txt", at / "rel")
        assert os.readlink(folder / "rel") == "b.txt" and (at / "rel").read_text() == "hello"
        os.chmod(at / "b.txt", 0o600)
        os.truncate(at / "b.txt", 2)
        os.utime(at / "b.txt", (1_700_000_000, 1_700_000_100))
        st = (folder / "b.txt").stat()
        assert (oct(st.st_mode & 0o777), st.st_size, int(st.st_mtime)) == (
            "0o600",
            2,
            1_700_000_100,
        )
        with open(at / "big", "wb") as big:  # more than one request each way
            big.write(os.urandom(1 << 20) * 3)
        assert (at / "big").read_bytes() == (folder / "big").read_bytes()
        os.makedirs(at / "d" / "e")
        names = {f"f{i}" for i in range(250)}  # more than one READDIR answer
        for name in names:
            (at / "d" / name).write_text(name)
        assert set(os.listdir(at / "d")) == names | {"e"}
        listed = subprocess.run(["ls", "-a", at], capture_output=True, text=True).stdout.split()
        assert listed[:2] == [".", ".."]  # as a local folder, and OpenSSH's server, list
        assert os.statvfs(at).f_blocks == os.statvfs(folder).f_blocks  # statvfs@openssh.com
        with pytest.raises(FileNotFoundError):
            os.remove(at / "nothing")
        shutil.rmtree(at / "d")
        for name in ("b.txt", "c.txt", "rel", "big", "from-host.txt"):
            os.remove(at / name)
        assert os.listdir(folder) == []
        assert server.handles == {}  # every file sshfs opened, closed


def test_a_read_only_share_refuses_writes_through_sshfs_too(tmp_path):
    folder, mnt = tmp_path / "shared", tmp_path / "mnt"
    folder.mkdir()
    mnt.mkdir()
    (folder / "kept.txt").write_text("kept")
    with sshfs(folder, mnt, read_only=True):
        assert (mnt / "kept.txt").read_text() == "kept"
        with pytest.raises(OSError):
            (mnt / "new").write_text("x")
    with served(folder, read_only=True) as client:  # what a guest's root could send itself
        for write in (
            lambda: client.open(f"{folder}/new", "w"),
            lambda: client.remove(f"{folder}/kept.txt"),
            lambda: client.mkdir(f"{folder}/d"),
            lambda: client.chmod(f"{folder}/kept.txt", 0o777),
            lambda: client.symlink("/", f"{folder}/link"),
            lambda: client.posix_rename(f"{folder}/kept.txt", f"{folder}/moved"),
        ):
            with pytest.raises(PermissionError):
                write()
    assert sorted(os.listdir(folder)) == ["kept.txt"]


def test_nothing_outside_the_folder_and_no_link_leads_out_of_it(tmp_path):
    """The guest's kernel resolves links itself, so sshfs never sends a path through one; a
    path that does (a guest's root speaking SFTP itself) must not leave the folder."""
    inside = tmp_path / "shared"
    inside.mkdir()
    (inside / "kept.txt").write_text("kept")
    (tmp_path / "secret").write_text("no")
    os.chmod(tmp_path / "secret", 0o600)
    os.symlink(tmp_path, inside / "out")  # the user's own link out
    out = f"{inside}/out"
    with served(inside) as client:
        client.symlink("/", f"{inside}/root")  # one the VM makes, as asked
        assert os.readlink(inside / "root") == "/"
        for denied in (
            lambda: client.stat(f"{inside}/../secret"),
            lambda: client.listdir(str(tmp_path)),
            lambda: client.open(f"{out}/secret"),
            lambda: client.open(f"{out}/made", "w"),
            lambda: client.open(f"{inside}/root{tmp_path}/secret"),
            lambda: client.stat(out),
            lambda: client.listdir(out),
            lambda: client.chmod(f"{out}/secret", 0o777),
            lambda: client.remove(f"{out}/secret"),
            lambda: client.mkdir(f"{out}/d"),
            lambda: client.posix_rename(f"{inside}/kept.txt", f"{out}/taken"),
            lambda: client.symlink("/", f"{out}/planted"),
        ):
            with pytest.raises(PermissionError):
                denied()
        assert sorted(os.listdir(tmp_path)) == ["secret", "shared"]
        assert oct(os.stat(tmp_path / "secret").st_mode & 0o777) == "0o600"
        # a dangling link out is no way to make a file out there either
        os.symlink(tmp_path / "dangling", inside / "dangle")
        with pytest.raises(PermissionError):
            client.open(f"{inside}/dangle", "w")
        assert not (tmp_path / "dangling").exists()
        # the links themselves are the guest's to see and remove; links inside lead inside
        assert oct(client.lstat(out).st_mode & 0o170000) == "0o120000"
        assert client.readlink(out) == str(tmp_path)
        os.symlink("kept.txt", inside / "rel")
        assert client.open(f"{inside}/rel").read() == b"kept"
        client.remove(out)
        assert (tmp_path / "secret").exists()


def test_a_hard_link_to_a_link_out_links_the_link_never_what_it_points_to(tmp_path, monkeypatch):
    inside = tmp_path / "shared"
    inside.mkdir()
    (tmp_path / "secret").write_text("no")
    os.symlink(tmp_path / "secret", inside / "out")
    server = sftpserver.Server(sftpserver.Folder(str(inside), False))

    def hardlink(request: int, new: str) -> bytes:
        return _ask(sftpserver.EXTENDED, request, "hardlink@openssh.com", f"{inside}/out", new)

    assert _code(server.answer(hardlink(1, f"{inside}/h"))) == sftpserver.OK
    assert os.path.islink(inside / "h") and os.stat(tmp_path / "secret").st_nlink == 1
    # where link(2) cannot be kept from following (Windows), a link is not hard-linked at all
    monkeypatch.setattr(os, "supports_follow_symlinks", set())
    assert _code(server.answer(hardlink(2, f"{inside}/h2"))) == sftpserver.PERMISSION_DENIED
    assert not os.path.lexists(inside / "h2") and os.stat(tmp_path / "secret").st_nlink == 1


def test_an_open_files_attributes_change_that_file_even_if_its_path_became_a_link(tmp_path):
    inside = tmp_path / "shared"
    inside.mkdir()
    (tmp_path / "secret").write_text("no")
    os.chmod(tmp_path / "secret", 0o600)
    with served(inside) as client:
        handle = client.open(f"{inside}/f", "w")
        os.replace(inside / "f", inside / "moved")
        os.symlink(tmp_path / "secret", inside / "f")
        handle.chmod(0o666)
        handle.close()
    assert oct(os.stat(tmp_path / "secret").st_mode & 0o777) == "0o600"
    assert oct(os.stat(inside / "moved").st_mode & 0o777) == "0o666"


def test_sftps_own_rename_never_replaces_a_file(tmp_path):
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with served(tmp_path) as client:
        with pytest.raises(OSError):
            client.rename(f"{tmp_path}/a", f"{tmp_path}/b")
        assert (tmp_path / "b").read_text() == "b"
        client.rename(f"{tmp_path}/a", f"{tmp_path}/c")
    assert sorted(os.listdir(tmp_path)) == ["b", "c"]


def test_setting_a_files_own_times_keeps_their_nanoseconds(tmp_path):
    """edits.py raises events in the guest by setting times the file already has; SFTP v3
    carries them in whole seconds, which must not cut the host's."""
    target = tmp_path / "app.py"
    target.write_text("x")
    os.utime(target, ns=(1_700_000_000_123_456_789, 1_700_000_000_987_654_321))
    with served(tmp_path) as client:
        client.utime(str(target), (1_700_000_000, 1_700_000_000))
        st = os.lstat(target)
        assert (st.st_atime_ns, st.st_mtime_ns) == (
            1_700_000_000_123_456_789,
            1_700_000_000_987_654_321,
        )
        client.utime(str(target), (1_700_000_100, 1_700_000_200))
    assert (os.lstat(target).st_atime, os.lstat(target).st_mtime) == (1_700_000_100, 1_700_000_200)


def _ask(kind: int, request: int, *strings: str | bytes, tail: bytes = b"") -> bytes:
    """A request as Server.answer takes it (its length not before it): its strings each after
    their length, then `tail`, whatever it holds."""
    raw = [x.encode() if isinstance(x, str) else x for x in strings]
    body = b"".join(struct.pack(">I", len(x)) + x for x in raw)
    return bytes([kind]) + struct.pack(">I", request) + body + tail


def _framed(packet: bytes) -> bytes:
    """As it comes down the stream: its length first."""
    return struct.pack(">I", len(packet)) + packet


def _code(answer: bytes) -> int:
    """A STATUS answer's code."""
    return struct.unpack(">IBII", answer[:13])[3]


def _handle(answer: bytes) -> bytes:
    """A HANDLE answer's handle."""
    return answer[13:]


def test_broken_requests_get_an_answer_and_a_hostile_stream_closes_what_it_opened(tmp_path):
    (tmp_path / "f").write_text("x")
    server = sftpserver.Server(sftpserver.Folder(str(tmp_path), False))
    assert _code(server.answer(_ask(99, 7))) == sftpserver.OP_UNSUPPORTED
    short = _ask(sftpserver.OPEN, 8, tail=struct.pack(">I", 100))  # a path cut short
    assert _code(server.answer(short)) == sftpserver.BAD_MESSAGE
    unknown = _ask(sftpserver.READ, 9, b"zz", tail=bytes(12))
    assert _code(server.answer(unknown)) == sftpserver.BAD_MESSAGE
    huge = _ask(sftpserver.SETSTAT, 12, str(tmp_path / "f"), tail=struct.pack(">IQ", 1, 2**64 - 1))
    assert _code(server.answer(huge)) == sftpserver.FAILURE
    assert (tmp_path / "f").read_text() == "x"
    nul = str(tmp_path / "f").encode() + b"\0/etc/passwd"
    assert _code(server.answer(_ask(sftpserver.STAT, 10, nul))) == sftpserver.BAD_MESSAGE
    fds = len(os.listdir("/proc/self/fd"))
    opened = _ask(sftpserver.OPEN, 11, str(tmp_path / "f"), tail=struct.pack(">II", 1, 0))
    stream = [_framed(bytes([sftpserver.INIT]) + struct.pack(">I", 3)), _framed(opened)]
    stream.append(struct.pack(">I", sftpserver.MAX_PACKET + 1))  # then a packet too big
    answered = []
    with pytest.raises(sftpserver.BadMessage):
        server.serve(lambda _n: stream.pop(0) if stream else b"", answered.append)
    assert struct.unpack(">B", answered[0][4:5])[0] == sftpserver.VERSION
    assert server.handles == {} and len(os.listdir("/proc/self/fd")) == fds


def test_a_fifo_in_the_folder_is_refused_and_does_not_hold_the_share(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "f").write_text("still served")
    with served(tmp_path) as client:
        opened = threading.Thread(target=lambda: _read_fifo(client, tmp_path / "fifo"))
        opened.start()
        opened.join(timeout=120)  # not a timing: a share held in open() never answers
        assert not opened.is_alive()
        assert client.open(f"{tmp_path}/f").read() == b"still served"


def _read_fifo(client: paramiko.SFTPClient, fifo) -> None:
    with pytest.raises(OSError):
        client.open(str(fifo)).read()


def test_a_listing_goes_on_past_a_batch_of_entries_gone_since_it_was_opened(tmp_path):
    for i in range(150):
        (tmp_path / f"f{i}").write_text("")
    order = os.listdir(tmp_path)  # as the server lists them
    server = sftpserver.Server(sftpserver.Folder(str(tmp_path), False))
    handle = _handle(server.answer(_ask(sftpserver.OPENDIR, 1, str(tmp_path))))
    for name in order[:-1]:
        os.remove(tmp_path / name)
    read = _ask(sftpserver.READDIR, 2, handle)
    names = server.answer(read)
    kind, count = names[4], struct.unpack(">I", names[9:13])[0]
    assert (kind, count) == (sftpserver.NAME, 3)  # ".", ".." and the one left
    assert order[-1].encode() in names
    assert server.answer(read)[4] == sftpserver.STATUS  # then the end


def test_the_shares_parent_is_not_listed_its_dot_dot_is_itself(tmp_path):
    inside = tmp_path / "shared"
    inside.mkdir(mode=0o750)
    os.chmod(tmp_path, 0o711)
    server = sftpserver.Server(sftpserver.Folder(str(inside), False))
    handle = _handle(server.answer(_ask(sftpserver.OPENDIR, 1, str(inside))))
    names = server.answer(_ask(sftpserver.READDIR, 2, handle))
    modes, at = {}, 13
    for _ in range(struct.unpack(">I", names[9:13])[0]):
        (size,) = struct.unpack(">I", names[at : at + 4])
        name = names[at + 4 : at + 4 + size]
        at += 4 + size
        at += 4 + struct.unpack(">I", names[at : at + 4])[0]  # the long name
        modes[name] = struct.unpack(">IQIII", names[at : at + 24])[4] & 0o777
        at += 32
    assert modes == {b".": 0o750, b"..": 0o750}


def test_the_guest_mounts_with_sshfs_in_slave_mode_read_only_when_shared_so():
    share = Share("/home/me/my code", "/home/me/my code", True, "vmctl0")
    assert mount_command(share) == (
        "sudo -n mkdir -p '/home/me/my code' && exec sudo -n sshfs -f -o "
        "slave,allow_other,ro ':/home/me/my code' '/home/me/my code'"
    )
