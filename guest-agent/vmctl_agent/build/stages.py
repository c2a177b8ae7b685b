"""Instructions grouped into build stages, as dockerd's classic builder sees them: the ARGs
before the first FROM, one stage per FROM (named with `AS`), every keyword and flag checked
before anything runs, and the stages a `--target` needs. Pure functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmctl_agent.build.dockerfile import Dockerfile, DockerfileError, Instruction

KEYWORDS = (
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label",
    "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
)  # fmt: skip
# The flags each instruction takes here; the BuildKit-only ones get their own message.
FLAGS = {
    "from": ("platform",),
    "copy": ("from", "chown", "chmod", "link"),
    "add": ("chown", "chmod", "link", "checksum"),
    "healthcheck": ("interval", "timeout", "start-period", "start-interval", "retries"),
}
BUILDKIT_ONLY = {
    "run": ("mount", "network", "security"),
    "copy": ("parents", "exclude"),
    "add": ("keep-git-dir", "parents", "exclude"),
}
_STAGE_NAME = re.compile(r"[a-z][a-z0-9-_.]*")


@dataclass(frozen=True)
class Stage:
    index: int
    name: str  # lower case, "" if unnamed
    base: str  # FROM's image (not yet substituted)
    from_instruction: Instruction
    steps: tuple[Instruction, ...]


@dataclass(frozen=True)
class Plan:
    global_args: tuple[Instruction, ...]  # the ARGs before the first FROM
    stages: tuple[Stage, ...]
    escape: str

    def target(self, name: str) -> Stage:
        """The stage `--target` names, or the last one."""
        if not name:
            return self.stages[-1]
        for stage in self.stages:
            if stage.name == name.lower():
                return stage
        raise DockerfileError(f"failed to reach build target {name} in Dockerfile")

    def stage(self, ref: str) -> Stage | None:
        """The stage a `COPY --from` or `FROM` names (by name or index), if any."""
        for stage in self.stages:
            if stage.name and stage.name == ref.lower():
                return stage
        if ref.isdigit() and int(ref) < len(self.stages):
            return self.stages[int(ref)]
        return None


def plan(dockerfile: Dockerfile) -> Plan:
    """Check every instruction and group them; raises DockerfileError naming the line."""
    if not dockerfile.instructions:
        raise DockerfileError("the Dockerfile cannot be empty")
    for instruction in dockerfile.instructions:
        check(instruction)
    global_args, rest = _leading_args(dockerfile.instructions)
    return Plan(global_args, _stages(rest), dockerfile.escape)


def check(instruction: Instruction) -> None:
    """Known keyword, known flags, arguments present."""
    keyword, line = instruction.keyword, instruction.line
    if keyword not in KEYWORDS:
        raise DockerfileError(f"unknown instruction: {instruction.keyword.upper()}", line)
    for name, _ in instruction.flags:
        if name in BUILDKIT_ONLY.get(keyword, ()):
            raise DockerfileError(
                f"the --{name} option requires BuildKit. Refer to "
                "https://docs.docker.com/go/buildkit/ to learn how to build images with "
                "BuildKit enabled",
                line,
            )
        if name not in FLAGS.get(keyword, ()):
            raise DockerfileError(f"unknown flag: {name}", line)
    if not instruction.args and not instruction.heredocs and instruction.json is None:
        raise DockerfileError(f"{keyword.upper()} requires at least one argument", line)
    if keyword == "onbuild":
        _check_onbuild(instruction)


def _check_onbuild(instruction: Instruction) -> None:
    inner = instruction.args.split(None, 1)[0].lower()
    if inner in ("onbuild", "from", "maintainer"):
        message = (
            "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
            if inner == "onbuild"
            else f"{inner.upper()} isn't allowed as an ONBUILD trigger"
        )
        raise DockerfileError(message, instruction.line)


def _leading_args(instructions) -> tuple[tuple[Instruction, ...], tuple[Instruction, ...]]:
    count = 0
    while count < len(instructions) and instructions[count].keyword == "arg":
        count += 1
    rest = instructions[count:]
    if not rest or rest[0].keyword != "from":
        where = rest[0].line if rest else instructions[-1].line
        raise DockerfileError("no build stage in current context", where)
    return tuple(instructions[:count]), tuple(rest)


def _stages(instructions: tuple[Instruction, ...]) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "from"]
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(instructions)
        head = instructions[start]
        base, name = _from_parts(head, stages)
        stages.append(Stage(index, name, base, head, tuple(instructions[start + 1 : end])))
    return tuple(stages)


def _from_parts(head: Instruction, earlier: list[Stage]) -> tuple[str, str]:
    words = head.args.split()
    if len(words) == 3 and words[1].lower() == "as":
        name = words[2].lower()
        if not _STAGE_NAME.fullmatch(name):
            raise DockerfileError(
                f"invalid name for build stage: {words[2]!r}, name can't start with a number "
                "or contain symbols",
                head.line,
            )
        if any(s.name == name for s in earlier):
            raise DockerfileError(f"duplicate name {name}", head.line)
        return words[0], name
    if len(words) != 1:
        raise DockerfileError("FROM requires either one or three arguments", head.line)
    return words[0], ""


def needed(plan_: Plan, target: Stage) -> list[Stage]:
    """The stages `target` depends on (FROM another stage, COPY --from), then itself, in
    Dockerfile order: the classic builder skips the others, as BuildKit does."""
    wanted = {target.index}
    for stage in reversed(plan_.stages[: target.index + 1]):
        if stage.index not in wanted:
            continue
        for ref in _references(stage):
            other = plan_.stage(ref)
            if other is not None and other.index < stage.index:
                wanted.add(other.index)
    return [s for s in plan_.stages if s.index in wanted]


def _references(stage: Stage) -> list[str]:
    refs = [stage.base]
    refs += [ins.flag("from") or "" for ins in stage.steps if ins.keyword == "copy"]
    return [r for r in refs if r]
