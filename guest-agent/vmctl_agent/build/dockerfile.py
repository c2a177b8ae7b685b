"""A Dockerfile's text into instructions, as BuildKit's parser (which dockerd's classic builder
shares) reads it: parser directives (`escape`, `syntax`, `check`) at the top, comments and
blank lines skipped, continuations joined, heredocs (`RUN <<EOF`) read, leading `--flags`
taken apart, and JSON or shell form decided. Nothing is substituted here: that happens per
instruction when it runs (words.py). Pure functions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from vmctl_agent.errors import AgentError

DIRECTIVES = ("escape", "syntax", "check")
HEREDOC_INSTRUCTIONS = ("run", "copy", "add")
JSON_INSTRUCTIONS = ("run", "cmd", "entrypoint", "shell", "copy", "add", "volume")
_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<(-?)(['\"]?)([a-zA-Z_][a-zA-Z0-9_]*)\2")
_FLAG = re.compile(r"--([a-zA-Z][a-zA-Z0-9-]*)(?:=((?:\"[^\"]*\"|'[^']*'|\S)*))?(?:\s+|$)")


class DockerfileError(AgentError):
    """The Dockerfile cannot be read; the message names the line, as dockerd's does."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(f"dockerfile parse error on line {line}: {message}" if line else message)
        self.line = line


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str
    expand: bool  # unquoted terminator: the content gets variables substituted
    chomp: bool  # `<<-`: leading tabs were stripped


@dataclass(frozen=True)
class Instruction:
    keyword: str  # lower case
    args: str  # the text after the keyword and its flags
    line: int  # where it starts (1-based)
    original: str  # the instruction as written, continuations joined
    flags: tuple[tuple[str, str | None], ...] = ()
    json: tuple[str, ...] | None = None  # the JSON (exec) form, when given
    heredocs: tuple[Heredoc, ...] = field(default=())

    def flag(self, name: str) -> str | None:
        values = [v for k, v in self.flags if k == name]
        return values[-1] if values else None


@dataclass(frozen=True)
class Dockerfile:
    instructions: tuple[Instruction, ...]
    escape: str = "\\"
    syntax: str = ""


def parse(text: str) -> Dockerfile:
    """The instructions of `text`; DockerfileError names the line of the first mistake."""
    lines = text.removeprefix("\ufeff").split("\n")
    lines = [line.removesuffix("\r") for line in lines]
    directives, start = _directives(lines)
    escape = directives.get("escape", "\\")
    reader = _Reader(lines, start, escape)
    instructions = tuple(reader.instructions())
    return Dockerfile(instructions, escape, directives.get("syntax", ""))


def _directives(lines: list[str]) -> tuple[dict[str, str], int]:
    found: dict[str, str] = {}
    for number, line in enumerate(lines):
        match = _DIRECTIVE.fullmatch(line.strip())
        if not match or match[1].lower() not in DIRECTIVES:
            return found, number
        name = match[1].lower()
        if name in found:
            raise DockerfileError(f"only one {name} parser directive can be used", number + 1)
        found[name] = match[2]
        if name == "escape" and match[2] not in ("\\", "`"):
            raise DockerfileError(
                f"invalid escape token '{match[2]}' does not match ` or \\", number + 1
            )
    return found, len(lines)


def _is_blank_or_comment(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


class _Reader:
    def __init__(self, lines: list[str], start: int, escape: str) -> None:
        self.lines, self.pos, self.escape = lines, start, escape
        self._continued = re.compile(re.escape(escape) + r"[ \t]*$")

    def instructions(self):
        while self.pos < len(self.lines):
            if _is_blank_or_comment(self.lines[self.pos]):
                self.pos += 1
                continue
            yield self._instruction()

    def _instruction(self) -> Instruction:
        number = self.pos + 1
        text = self._joined()
        keyword, _, rest = text.strip().partition(" ")
        keyword, rest = keyword.lower(), rest.strip()
        if "\t" in keyword:
            keyword, _, more = keyword.partition("\t")
            rest = (more + " " + rest).strip()
        flags, rest = _flags(rest, number)
        form = _json_form(keyword, rest)
        heredocs = self._heredocs(keyword, rest, number) if form is None else ()
        return Instruction(keyword, rest, number, text.strip(), flags, form, heredocs)

    def _joined(self) -> str:
        """The instruction's text: lines ending in the escape character continue it; comment
        and blank lines inside it are skipped, as BuildKit does."""
        parts = []
        line = self.lines[self.pos]
        self.pos += 1
        while self._continued.search(line):
            parts.append(self._continued.sub("", line))
            while self.pos < len(self.lines) and _is_blank_or_comment(self.lines[self.pos]):
                self.pos += 1
            if self.pos >= len(self.lines):
                return "".join(parts)
            line = self.lines[self.pos]
            self.pos += 1
        parts.append(line)
        return "".join(parts)

    def _heredocs(self, keyword: str, rest: str, number: int) -> tuple[Heredoc, ...]:
        if keyword not in HEREDOC_INSTRUCTIONS:
            return ()
        found = []
        for match in _HEREDOC.finditer(rest):
            chomp, quote, name = match[1] == "-", match[2], match[3]
            body = self._heredoc_body(name, chomp, number)
            found.append(Heredoc(name, body, expand=not quote, chomp=chomp))
        return tuple(found)

    def _heredoc_body(self, name: str, chomp: bool, number: int) -> str:
        body = []
        while self.pos < len(self.lines):
            line = self.lines[self.pos]
            self.pos += 1
            if chomp:
                line = line.lstrip("\t")
            if line == name:
                return "".join(f"{x}\n" for x in body)
            body.append(line)
        raise DockerfileError(f"unterminated heredoc {name}", number)


def _flags(rest: str, number: int) -> tuple[tuple[tuple[str, str | None], ...], str]:
    flags = []
    while rest.startswith("--"):
        match = _FLAG.match(rest)
        if not match:
            raise DockerfileError(f"invalid flag in {rest.split()[0]!r}", number)
        value = match[2]
        if value is not None and len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        flags.append((match[1].lower(), value))
        rest = rest[match.end() :]
    return tuple(flags), rest.strip()


def _json_form(keyword: str, rest: str) -> tuple[str, ...] | None:
    """The exec form when `rest` is a JSON array of strings; None for the shell form."""
    if keyword not in JSON_INSTRUCTIONS or not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(value)
