"""The raw Linux calls the runtime needs and Python 3.11's os module lacks, in one place.

mount, umount2, pivot_root, unshare, setns, sethostname, prctl, capget/capset and close_range,
through ctypes on the C library. Each raises OSError with the errno and what was attempted.
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)
# Looked up here, once (ctypes keeps them): a fork would otherwise do each dlsym again on its
# first call, and the container's first process calls most of these just once.
for _name in ("mount", "umount2", "pivot_root", "unshare", "setns", "sethostname", "capset",
              "prctl", "close_range"):  # fmt: skip
    getattr(_libc, _name, None)  # (a C library without one fails when it is called, as before)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_STRICTATIME = 0x1000000

MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_SET_THP_DISABLE = 41
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    result = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(result, f"mount {fstype or 'bind'} on {target}")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.pivot_root(_b(new_root), _b(put_old)), "pivot_root")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


_libc.prctl.argtypes = (ctypes.c_int, *(ctypes.c_ulong,) * 4)  # dozens of calls a start


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> None:
    if _libc.prctl(option, arg2, arg3, arg4, arg5) != 0:
        _check(-1, f"prctl {option}")


def set_huge_pages(allowed: bool) -> None:
    """Whether this process's memory may be backed by transparent huge pages (forks and execs
    inherit it). A kernel built without them has nothing to turn off."""
    try:
        prctl(PR_SET_THP_DISABLE, 0 if allowed else 1)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise


def read_to_end(fd: int) -> bytes:
    """Every byte until end of file (or until the writer closes a pipe), without a Python
    file object: cgroup files and a child's error pipe are read this way."""
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def close_range(first: int) -> None:
    """Close every fd from `first` up: nothing of ours may leak into a container."""
    _check(_libc.close_range(ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF), 0), "close_range")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets from 64-bit masks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i, shift in enumerate((0, 32)):
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")
