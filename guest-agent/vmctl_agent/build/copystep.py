"""COPY and ADD as build steps: the instruction's words made into a plan (sources,
destination, owner, mode), the sources that are not paths (heredocs, ADD's URLs) fetched, the
history line dockerd writes, and the copy itself in the mounted image (copier.py's rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vmctl_agent.build import copier, steps, words
from vmctl_agent.build.dispatch import StageState
from vmctl_agent.build.dockerfile import DockerfileError, Instruction

_URL = ("http://", "https://")


@dataclass(frozen=True)
class CopyPlan:
    verb: str  # COPY or ADD
    patterns: tuple[str, ...]  # context (or --from) paths and globs
    urls: tuple[str, ...]  # ADD's remote files
    dest: str  # absolute in the image; a trailing `/` kept
    written: str  # the destination as the Dockerfile wrote it (for the history)
    chown: str
    mode: int | None


def plan(state: StageState, ins: Instruction, variables: dict) -> CopyPlan:
    """What to copy where, with the build's variables substituted."""
    verb = ins.keyword.upper()
    args = _words(state, ins, variables)
    if len(args) < (1 if ins.heredocs else 2):
        raise DockerfileError(
            f"{verb} requires at least two arguments, but only one was provided. "
            "Destination could not be determined.",
            ins.line,
        )
    sources, written = args[:-1], args[-1]
    urls = tuple(s for s in sources if s.startswith(_URL))
    if urls and verb == "COPY":
        raise steps.StepFailed("COPY failed: source can't be a URL for COPY")
    chown = words.expand(ins.flag("chown") or "", variables)
    local = tuple(s for s in sources if s not in urls)
    dest = _absolute(state, written)
    return CopyPlan(verb, local, urls, dest, written, chown, _mode(ins, variables))


def _words(state: StageState, ins: Instruction, variables: dict) -> list[str]:
    if ins.json is not None:
        args = [words.expand(a, variables, state.escape) for a in ins.json]
    else:
        args = words.split(ins.args, variables, state.escape)
    return [a for a in args if not a.startswith("<<")]  # the heredocs' markers


def _absolute(state: StageState, dest: str) -> str:
    """A relative destination is under WORKDIR; `.` and `..` at the end mean directories."""
    if not dest.startswith("/"):
        dest = (state.config.get("WorkingDir") or "/").rstrip("/") + "/" + dest
    return dest + "/" if dest.endswith(("/.", "/..")) else dest


def _mode(ins: Instruction, variables: dict) -> int | None:
    raw = ins.flag("chmod")
    if raw is None:
        return None
    try:
        mode = int(words.expand(raw, variables), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise DockerfileError(f"invalid chmod parameter: {raw}", ins.line)
    return mode


def fetched_sources(
    plan_: CopyPlan, ins: Instruction, variables: dict, escape: str, scratch: Path
) -> list[copier.Source]:
    """The heredocs, as files, and ADD's URLs, downloaded."""
    found = steps.heredoc_sources(ins, variables, escape, scratch)
    return found + [steps.download(u, scratch, ins.flag("checksum")) for u in plan_.urls]


def comment(plan_: CopyPlan, label: str) -> str:
    """The history's text, as dockerd writes it: `COPY [--chown=X ]dir:<hash> in <dest> `."""
    chown = f"--chown={plan_.chown} " if plan_.chown else ""
    return f"{plan_.verb} {chown}{label} in {plan_.written} "


def apply(root: str, found: list[copier.Source], plan_: CopyPlan, scratch: Path) -> None:
    """Copy `found` into the mounted image `root`."""
    uid, gid = steps.chown_ids(root, plan_.chown) if plan_.chown else (0, 0)
    target = copier.Target(plan_.dest, uid, gid, plan_.mode, plan_.verb == "ADD")
    copier.copy(root, found, target, scratch)
