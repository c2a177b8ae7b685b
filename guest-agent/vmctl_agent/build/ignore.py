"""`.dockerignore`: which context paths a build leaves out, with the rules of Go's
patternmatcher that the docker CLI and dockerd share: `*`, `?`, `[...]` and `\\` as in
filepath.Match, `**` for any number of directories, `!` for exceptions, the last matching
line wins, and a pattern that matches a directory leaves out everything under it.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool  # a `!` line: put back what an earlier line left out
    regex: re.Pattern

    def match(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def read(text: str) -> list[Pattern]:
    """The patterns of a .dockerignore file: comments and blank lines skipped, each pattern
    cleaned (a leading `/` or `./` means the context's root)."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        line = line[1:].strip() if exclusion else line
        if not line:
            continue
        cleaned = posixpath.normpath(line).lstrip("/") or "."
        patterns.append(Pattern(cleaned, exclusion, _compile(cleaned)))
    return patterns


def ignored(path: str, patterns: list[Pattern]) -> bool:
    """Whether the context path `path` (relative, `/`-separated) is left out."""
    path = posixpath.normpath(path)
    parents = posixpath.dirname(path).split("/") if "/" in path else []
    matched = False
    for pattern in patterns:
        if pattern.exclusion != matched:
            continue
        hit = pattern.match(path) or any(
            pattern.match("/".join(parents[: i + 1])) for i in range(len(parents))
        )
        if hit:
            matched = not pattern.exclusion
    return matched


def _compile(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out.append(".*" if i >= len(pattern) else "(.*/)?")
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                out.append(_char_class(pattern[i + 1 : end]))
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out))


def _char_class(body: str) -> str:
    negate = body.startswith("^") or body.startswith("!")
    body = body[1:] if negate else body
    escaped = body.replace("\\", "\\\\").replace("[", "\\[")
    return f"[{'^' if negate else ''}{escaped}]"
