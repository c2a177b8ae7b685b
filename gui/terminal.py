"""Run a command in the user's own terminal: Terminal on macOS, Windows Terminal or cmd on
Windows, the default terminal emulator on Linux.

`terminal_argv` is pure (platform, what is installed and the environment are arguments), so each
platform's command line is tested everywhere; `open_terminal` runs it in its own session, so
closing the app does not close the shell.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence

from vmctl.errors import VmctlError

# Linux emulators in the order we try them, with the flag that precedes the command.
LINUX_TERMINALS = (
    ("x-terminal-emulator", ("-e",)),  # Debian's alternatives: the user's chosen default
    ("gnome-terminal", ("--",)),
    ("konsole", ("-e",)),
    ("xfce4-terminal", ("-x",)),
    ("kitty", ()),
    ("alacritty", ("-e",)),
    ("foot", ()),
    ("xterm", ("-e",)),
)


def terminal_argv(
    command: Sequence[str],
    platform: str = sys.platform,
    which: Callable[[str], str | None] = shutil.which,
    environ: Mapping[str, str] = os.environ,
    title: str = "vmctl",
) -> list[str]:
    """The argv that opens a terminal window running `command`."""
    if platform == "darwin":
        script = shlex.join(command).replace("\\", "\\\\").replace('"', '\\"')
        return [
            "osascript",
            "-e",
            f'tell application "Terminal" to do script "{script}"',
            "-e",
            'tell application "Terminal" to activate',
        ]
    if platform == "win32":
        if which("wt.exe") or which("wt"):
            return ["wt.exe", "new-tab", "--title", title, "--", *command]
        return ["cmd.exe", "/c", "start", title, "cmd.exe", "/k", *command]
    chosen = environ.get("TERMINAL")
    if chosen and which(chosen):
        return [chosen, "-e", *command]
    for program, flag in LINUX_TERMINALS:
        if which(program):
            return [program, *flag, *command]
    raise VmctlError(
        "no terminal emulator was found: install one (xterm, gnome-terminal, konsole…) or set "
        f"TERMINAL; meanwhile run this yourself: {shlex.join(command)}"
    )


def open_terminal(command: Sequence[str]) -> subprocess.Popen:
    argv = terminal_argv(command)
    kwargs: dict = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL}
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
    else:
        kwargs["start_new_session"] = True
    try:
        return subprocess.Popen(argv, **kwargs)
    except OSError as e:
        raise VmctlError(f"could not open a terminal ({argv[0]}: {e.strerror})") from None
