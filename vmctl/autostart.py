"""Start the desktop app at login: an XDG autostart entry on Linux, a LaunchAgent on macOS,
the per-user Run key on Windows. No admin rights anywhere, and turning it off removes it all.

The file contents are pure functions (tested on every OS); `enable`/`disable`/`enabled` act on
the current user's session.
"""

from __future__ import annotations

import contextlib
import os
import plistlib
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from vmctl import atomic

LABEL = "io.vmctl.desktop"  # the LaunchAgent's label and the Run key's value name
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"


def desktop_entry(command: Sequence[str]) -> str:
    """The XDG autostart entry (freedesktop's Desktop Entry spec)."""
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=vmctl\n"
        "Comment=Start the vmctl desktop app (containers in a Linux VM)\n"
        f"Exec={shlex.join(command)}\n"
        "Icon=vmctl\n"
        "Terminal=false\n"
        "X-GNOME-Autostart-enabled=true\n"
    )


def launch_agent(command: Sequence[str]) -> bytes:
    """The macOS LaunchAgent plist: run once at login, not kept alive (Quit means quit)."""
    return plistlib.dumps(
        {"Label": LABEL, "ProgramArguments": list(command), "RunAtLoad": True, "KeepAlive": False}
    )


def entry_path(platform: str = sys.platform, home: Path | None = None) -> Path | None:
    """Where the login item lives (None on Windows: the registry holds it)."""
    home = home or Path.home()
    if platform == "darwin":
        return home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    if platform == "win32":
        return None
    config = os.environ.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(config) / "autostart" / "vmctl.desktop"


def enable(command: Sequence[str]) -> None:
    path = entry_path()
    if path is None:
        _set_run_key(subprocess.list2cmdline(list(command)))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "darwin":
        atomic.write_bytes(path, launch_agent(command))
    else:
        atomic.write_text(path, desktop_entry(command))


def disable() -> None:
    path = entry_path()
    if path is None:
        _set_run_key(None)
    elif path.exists():
        path.unlink()


def enabled() -> bool:
    path = entry_path()
    if path is None:
        return _run_key() is not None
    return path.exists()


def _set_run_key(value: str | None) -> None:  # pragma: no cover - Windows only
    import winreg

    with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
        if value is None:
            with contextlib.suppress(FileNotFoundError):
                winreg.DeleteValue(key, LABEL)
        else:
            winreg.SetValueEx(key, LABEL, 0, winreg.REG_SZ, value)


def _run_key() -> str | None:  # pragma: no cover - Windows only
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            return winreg.QueryValueEx(key, LABEL)[0]
    except FileNotFoundError:
        return None
