"""`GET /images/json?filters=`: reference, dangling, label, before and since, as dockerd
matches them. A reference pattern is matched (Go's path.Match: `*` stops at `/`) against each
tag and digest in its familiar form (`busybox:latest`) and against its name (`busybox`); a
listed image shows only the references that matched.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from vmctl_agent.api.http import ApiError
from vmctl_agent.store import reference as refs

KNOWN = ("reference", "dangling", "label", "before", "since", "until")


def check(filters: dict[str, list[str]]) -> None:
    for key in filters:
        if key not in KNOWN:
            raise ApiError(400, f"invalid filter '{key}'")
    for value in filters.get("dangling", []):
        if value not in ("true", "false", "1", "0"):
            raise ApiError(400, f"invalid filter 'dangling={value}'")
    if "until" in filters:
        raise ApiError(400, "the until filter is not supported by this engine yet")


def matching_references(patterns: list[str], references: list[str]) -> list[str]:
    """The references (stored, normalised) that one of the patterns matches."""
    compiled = [_pattern(p) for p in patterns]
    return [r for r in references if any(_matches(m, r) for m in compiled)]


def _matches(match: Callable[[str], bool], stored: str) -> bool:
    ref = refs.parse(stored)
    return match(ref.familiar()) or match(ref.familiar_name)


def _pattern(pattern: str) -> Callable[[str], bool]:
    """Go's path.Match as a regular expression; a malformed pattern is a 400."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":
            regex, i = _char_class(pattern, i)
            out.append(regex)
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(c) or re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z").match


def _char_class(pattern: str, start: int) -> tuple[str, int]:
    """`[a-z]` or `[^/]` from `start`: the regex and where the class ends."""
    end = pattern.find("]", start + 2)
    if end < 0:
        raise ApiError(400, f"invalid reference filter {pattern!r}: syntax error in pattern")
    body = pattern[start + 1 : end]
    negate = body.startswith("^")
    body = re.escape(body[1:] if negate else body).replace("\\-", "-")
    return f"[{'^' if negate else ''}{body}]", end
