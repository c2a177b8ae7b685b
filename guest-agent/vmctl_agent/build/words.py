"""Docker's shell-like word rules for Dockerfile instructions (its ShellLex): quotes, the
escape character, and `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:+alt}` (and the `-`/`+`
forms without the colon) substituted from the build's variables. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping

from vmctl_agent.errors import AgentError


class WordError(AgentError):
    """A word Docker's lexer refuses (an unterminated quote, a bad ${...})."""


def expand(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """One word, quotes removed and variables substituted (ENV/LABEL values, WORKDIR...)."""
    words = _Lexer(text, env, escape).words(split=False)
    return words[0] if words else ""


def split(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Whitespace-separated words, each expanded (COPY sources, EXPOSE, FROM...)."""
    return _Lexer(text, env, escape).words(split=True)


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text, self.env, self.escape, self.pos = text, env, escape, 0

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _next(self) -> str:
        ch = self._peek()
        self.pos += 1
        return ch

    def words(self, split: bool) -> list[str]:
        words: list[str] = []
        word, started = [], False
        while self.pos < len(self.text):
            ch = self._peek()
            if split and ch in " \t\r\n":
                self.pos += 1
                if started:
                    words.append("".join(word))
                    word, started = [], False
                continue
            started = True
            word.append(self._piece())
        if started:
            words.append("".join(word))
        return words

    def _piece(self) -> str:
        ch = self._next()
        if ch == "'":
            return self._single_quoted()
        if ch == '"':
            return self._double_quoted()
        if ch == "$":
            return self._variable()
        if ch == self.escape:
            return self._next()
        return ch

    def _single_quoted(self) -> str:
        end = self.text.find("'", self.pos)
        if end < 0:
            raise WordError(f"unterminated quote: no matching single-quote in {self.text!r}")
        value, self.pos = self.text[self.pos : end], end + 1
        return value

    def _double_quoted(self) -> str:
        out = []
        while True:
            ch = self._next()
            if ch == "":
                raise WordError(f"unterminated quote: no matching double-quote in {self.text!r}")
            if ch == '"':
                return "".join(out)
            if ch == "$":
                out.append(self._variable())
            elif ch == self.escape and self._peek() in ('"', "$", self.escape):
                out.append(self._next())
            else:
                out.append(ch)

    def _variable(self) -> str:
        ch = self._peek()
        if ch == "{":
            self.pos += 1
            return self._braced()
        name = self._name()
        if not name:
            return "$"
        return self.env.get(name, "")

    def _name(self) -> str:
        start = self.pos
        if self._peek().isdigit() or self._peek() in "@*#?$!-":
            self.pos += 1
            return self.text[start : self.pos]
        while self._peek() and (self._peek().isalnum() or self._peek() == "_"):
            self.pos += 1
        return self.text[start : self.pos]

    def _braced(self) -> str:
        name = self._name()
        if not name:
            raise WordError(f"bad substitution in {self.text!r}: missing variable name")
        op = self._next()
        if op == "":
            raise WordError(f"missing '}}' in substitution {self.text!r}")
        if op == "}":
            return self.env.get(name, "")
        if op == ":":
            op += self._next()
        if op not in (":-", ":+", "-", "+", ":?", "?"):
            raise WordError(f"unsupported modifier ({op}) in substitution {self.text!r}")
        word = self._until_brace()
        return _modify(name, op, word, self.env)

    def _until_brace(self) -> str:
        out = []
        while True:
            ch = self._peek()
            if ch == "":
                raise WordError(f"missing '}}' in substitution {self.text!r}")
            if ch == "}":
                self.pos += 1
                return "".join(out)
            out.append(self._piece())


def _modify(name: str, op: str, word: str, env: Mapping[str, str]) -> str:
    value = env.get(name)
    is_set = value is not None and (value != "" or not op.startswith(":"))
    if op.endswith("-"):
        return value if is_set else word
    if op.endswith("+"):
        return word if is_set else ""
    if not is_set:
        raise WordError(f"{name}: {word or 'is not allowed to be unset'}")
    return value
