"""A build from start to end: the stages the target needs, each step in order with the
classic builder's cache, and the stream the docker CLI reads (`Step 2/5 : ...`,
` ---> Using cache`, ` ---> Running in ...`, ` ---> <id>`, `Successfully built`,
`Successfully tagged`, and `aux` with the image ID for `--iidfile`).

The builder is a generator of stream messages: the API sends each as it comes, and a client
that goes away closes the generator, which removes the running step's container on its way
out. A failed step raises (StepFailed, DockerfileError, ...) and tags nothing.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vmctl_agent.build import (
    commit,
    copier,
    copystep,
    dispatch,
    layertar,
    stages,
    steps,
    trees,
    words,
    workspace,
)
from vmctl_agent.build.contexttree import ContextTree
from vmctl_agent.build.dispatch import StageState
from vmctl_agent.build.dockerfile import DockerfileError, Instruction, parse
from vmctl_agent.errors import ImageNotFound
from vmctl_agent.runtime.containers import Runtime
from vmctl_agent.store import reference as refs
from vmctl_agent.store.images import Image, ImageStore

# Pulls an image by name; returns the pull's progress messages.
Pull = Callable[[str], list[dict]]


@dataclass(frozen=True)
class BuildOptions:
    tags: tuple[str, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    target: str = ""
    nocache: bool = False
    remove: bool = True  # the step containers (rm, forcerm)
    quiet: bool = False
    pull: bool = False
    limits: steps.RunLimits = field(default_factory=steps.RunLimits)
    cache_from: tuple[str, ...] = ()  # given: only these images and their parents are cache


@dataclass
class _Outcome:
    """What a COPY or ADD found: its config, a cache hit if any, and its sources."""

    step_config: dict
    hit: str | None
    found: list = field(default_factory=list)

    @property
    def skip(self) -> bool:
        return self.hit is not None


class Builder:
    def __init__(
        self,
        images: ImageStore,
        runtime: Runtime,
        pull: Pull,
        workspace: Path,
        context: ContextTree,
        options: BuildOptions,
        alive: Callable[[], bool] = lambda: True,
        pins: set[str] | None = None,
    ) -> None:
        """`alive` says whether the client still listens (a RUN stops when it is gone);
        `pins` gets every image the build makes or uses, for prunes to leave alone."""
        self.images, self.runtime, self.pull, self.alive = images, runtime, pull, alive
        self.workspace, self.context, self.options = workspace, context, options
        self.cache = commit.BuildCache(images)
        self.cache_sources = commit.lineage(images, options.cache_from)
        self.meta: dict[str, str] = {}  # the ARGs before the first FROM
        self.consumed: set[str] = set()
        self.number = self.total = self._scratches = 0
        self.done: dict[int, StageState] = {}
        self.plan: stages.Plan | None = None
        self.image_id = ""  # the result, once built
        self.pins = pins if pins is not None else set()

    def run(self, plan: stages.Plan) -> Iterator[dict]:
        """Every message of the build, up to `Successfully tagged`; with `quiet`, only the
        image ID (as `aux` and as the last line)."""
        for message in self._build(plan):
            final = message.pop("final", False)
            if not self.options.quiet or final or "aux" in message:
                yield message

    def _build(self, plan: stages.Plan) -> Iterator[dict]:
        self.plan = plan
        target = plan.target(self.options.target)
        chosen = stages.needed(plan, target)
        self.total = sum(1 + len(s.steps) for s in chosen) + bool(self.options.labels)
        self.meta = self._global_args(plan)
        for stage in chosen:
            self.done[stage.index] = yield from self._stage(plan, stage)
        final = self.done[target.index]
        if self.options.labels:
            labels = self._labels_instruction()
            yield self._line(labels)
            yield from self._step(final, labels)
        yield from self._finish(final.image_id)

    def _global_args(self, plan: stages.Plan) -> dict[str, str]:
        found: dict[str, str] = {}
        for ins in plan.global_args:
            for word in dispatch.raw_words(ins.args):
                name, sep, default = word.partition("=")
                self.consumed.add(name)
                if name in self.options.build_args:
                    found[name] = self.options.build_args[name]
                elif sep:
                    found[name] = words.expand(default, found, plan.escape)
        return found

    def _line(self, ins: Instruction) -> dict:
        self.number += 1
        first = ins.original.split("\n")[0]
        return {"stream": f"Step {self.number}/{self.total} : {first}\n"}

    # -- stages ------------------------------------------------------------------------------

    def _stage(self, plan: stages.Plan, stage: stages.Stage):
        state = yield from self._from(plan, stage)
        for ins in stage.steps:
            yield self._line(ins)
            yield from self._step(state, ins)
        return state

    def _from(self, plan: stages.Plan, stage: stages.Stage):
        ins = stage.from_instruction
        yield self._line(ins)
        self._check_platform(ins)
        name = words.expand(stage.base, self.meta, plan.escape)
        earlier = plan.stage(name)
        if earlier is not None and earlier.index in self.done:
            image = self.images.get(self.done[earlier.index].image_id)
        elif name.lower() == "scratch":
            image = None
        else:
            image = yield from self._base_image(name)
        if image is not None:
            yield {"stream": f" ---> {_short(image.id)}\n"}
        state = _state_from(image, plan.escape)
        yield from self._triggers(state)
        return state

    def _check_platform(self, ins: Instruction) -> None:
        platform = ins.flag("platform")
        if platform is None:
            return
        value = words.expand(platform, self.meta)  # $BUILDPLATFORM is unset here: the default
        if value not in ("", "linux/amd64", "linux/x86_64", "linux", "amd64"):
            raise DockerfileError(
                f'"{value}" is not a platform this engine builds for: it builds linux/amd64',
                ins.line,
            )

    def _base_image(self, name: str):
        if not self.options.pull:
            try:
                return self._pinned(self.images.get(name))
            except ImageNotFound:
                pass
        yield from self.pull(name)
        return self._pinned(self.images.get(name))

    def _pinned(self, image: Image) -> Image:
        self.pins.add(image.id)
        return image

    def _triggers(self, state: StageState):
        triggers = state.config.get("OnBuild") or []
        state.config["OnBuild"] = None
        if not triggers:
            return
        yield {"stream": f"# Executing {len(triggers)} build trigger{'s' * (len(triggers) > 1)}\n"}
        for text in triggers:
            (ins,) = parse(text).instructions
            stages.check(ins)
            yield from self._step(state, ins)

    # -- steps -------------------------------------------------------------------------------

    def _step(self, state: StageState, ins: Instruction):
        variables = state.variables(self.options.build_args)
        if ins.keyword == "run":
            yield from self._run(state, ins)
        elif ins.keyword in ("copy", "add"):
            yield from self._copy(state, ins, variables)
        elif ins.keyword == "workdir":
            yield from self._workdir(state, ins, variables)
        else:
            text = self._metadata(state, ins, variables)
            yield from self._nop(state, dispatch.nop(state, text))

    def _metadata(self, state: StageState, ins: Instruction, variables: dict) -> str:
        if ins.keyword != "arg":
            return dispatch.apply(state, ins, variables)
        self.consumed.update(w.partition("=")[0] for w in dispatch.raw_words(ins.args))
        return dispatch.apply_arg(state, ins, self.options.build_args, self.meta)

    def _nop(self, state: StageState, cmd: list[str]):
        step_config = commit.container_config(state, cmd)
        if (hit := self._cached(state, step_config)) is not None:
            yield from self._use_cache(state, hit)
            return
        yield from self._commit(state, step_config, None)

    def _run(self, state: StageState, ins: Instruction):
        if ins.heredocs and ins.json is None:
            cmd = steps.heredoc_command(state, ins)
        else:
            cmd = dispatch.command_line(state, ins)
        env = dispatch.build_env(state, self.options.build_args)
        step_config = commit.container_config(state, ([f"|{len(env)}", *env] if env else []) + cmd)
        if (hit := self._cached(state, step_config)) is not None:
            yield from self._use_cache(state, hit)
            return
        if not state.layers:
            raise steps.StepFailed(f"cannot run '{' '.join(cmd)}': the image has no files yet")
        opts = self.options

        def save(upper: Path, container_id: str) -> str:
            with self.images.content.gc_lock(shared=True):
                content, made = self.images.content, steps.runtime_made
                layer = layertar.store_layer(content, upper, made, adopt=opts.remove)
                return self._commit_now(state, step_config, layer, container_id)

        noted = functools.partial(workspace.note_step, self.workspace)
        image_id = yield from steps.run(
            self.runtime, state, cmd, env, opts.limits, opts.remove, save, self.alive, noted
        )
        yield {"stream": f" ---> {_short(image_id)}\n"}

    def _workdir(self, state: StageState, ins: Instruction, variables: dict):
        path = dispatch.workdir(state, ins, variables)
        step_config = commit.container_config(
            state, dispatch.nop(state, f"WORKDIR {path}", single=True)
        )
        if (hit := self._cached(state, step_config)) is not None:
            yield from self._use_cache(state, hit)
            return
        work = self._scratch("workdir")
        with self.images.content.gc_lock(shared=True):
            _, layer = steps.mounted(
                self.images, state, work, lambda root: steps.make_workdir(root, path)
            )
            image_id = self._commit_now(state, step_config, layer)
        yield {"stream": f" ---> {_short(image_id)}\n"}

    def _copy(self, state: StageState, ins: Instruction, variables: dict):
        """COPY/ADD. From the context, the cache is asked before anything is mounted; from
        another stage or image, once that image is mounted and its files can be hashed."""
        plan = copystep.plan(state, ins, variables)
        scratch = self._scratch("sources")
        fetched = copystep.fetched_sources(plan, ins, variables, state.escape, scratch)
        source_layers = yield from self._copy_source(ins, variables)
        early = None
        if source_layers is None:
            early = self._copy_lookup(state, plan, self.context.root, fetched, self.context)
            if early.hit is not None:
                yield from self._use_cache(state, early.hit)
                return

        def action(root: str, source_root: str | None = None) -> _Outcome:
            outcome = early or self._copy_lookup(state, plan, source_root or "", fetched)
            if outcome.hit is None:
                copystep.apply(root, outcome.found, plan, scratch)
            return outcome

        work = self._scratch("mount")
        with self.images.content.gc_lock(shared=True):
            outcome, layer = steps.mounted(self.images, state, work, action, source_layers)
            if outcome.hit is None:
                image_id = self._commit_now(state, outcome.step_config, layer)
        if outcome.hit is not None:
            yield from self._use_cache(state, outcome.hit)
            return
        yield {"stream": f" ---> {_short(image_id)}\n"}

    def _copy_lookup(
        self, state: StageState, plan, root: str, fetched: list, tree: trees.Tree = trees.DISK
    ) -> _Outcome:
        """The sources under `root` in `tree`, the step's config (with their content hash)
        and the cache's answer for it."""
        found = copier.find_sources(root, list(plan.patterns), plan.verb, tree) + fetched
        text = copystep.comment(plan, copier.content_hash(found))
        step_config = commit.container_config(state, dispatch.nop(state, text, single=True))
        return _Outcome(step_config, self._cached(state, step_config), found)

    def _copy_source(self, ins: Instruction, variables: dict):
        """The layers of a `--from` stage or image (None for the context)."""
        ref = ins.flag("from")
        if ref is None:
            return None
        ref = words.expand(ref, {**self.meta, **variables})
        stage = self.plan.stage(ref) if self.plan is not None else None
        if stage is not None and stage.index in self.done:
            return self.done[stage.index].layers
        image = yield from self._base_image(ref)
        return list(image.record.layers)

    def _scratch(self, kind: str) -> Path:
        """A new path in the build's workspace (made, for sources)."""
        self._scratches += 1
        path = self.workspace / f"{kind}-{self._scratches}"
        if kind == "sources":
            path.mkdir()
        return path

    # -- images ------------------------------------------------------------------------------

    def _cached(self, state: StageState, step_config: dict) -> str | None:
        """The cached image for this step, pinned before it is looked at again (a prune
        running meanwhile leaves it alone), or None."""
        if self.options.nocache:
            return None
        hit = self.cache.get(self.cache.key(state.image_id, step_config))
        if hit is None or (self.cache_sources is not None and hit not in self.cache_sources):
            return None
        self.pins.add(hit)
        return hit if self.images.exists(hit) else None

    def _use_cache(self, state: StageState, image_id: str):
        self.pins.add(image_id)
        image = self.images.get(image_id)
        state.image_id = image.id
        state.layers = list(image.record.layers)
        state.history = list(image.config.get("history") or [])
        state.config = copy.deepcopy(image.config.get("config") or {})
        state.author = image.config.get("author", "")
        yield {"stream": " ---> Using cache\n"}
        yield {"stream": f" ---> {_short(image.id)}\n"}

    def _commit(self, state: StageState, step_config: dict, layer, container_id: str = ""):
        with self.images.content.gc_lock(shared=True):
            image_id = self._commit_now(state, step_config, layer, container_id)
        yield {"stream": f" ---> {_short(image_id)}\n"}

    def _commit_now(self, state: StageState, step_config: dict, layer, container_id: str = ""):
        """The step's image, cached, and pinned for the rest of the build (nothing prunes
        it while the build still needs it). Call with the gc lock held shared."""
        parent = state.image_id
        image_id = commit.commit(self.images, state, step_config, layer, container_id)
        self.cache.put(self.cache.key(parent, step_config), image_id)
        self.pins.add(image_id)
        return image_id

    def _labels_instruction(self) -> Instruction:
        labels = self.options.labels.items()
        pairs = " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in labels)
        return Instruction("label", pairs, 0, f"LABEL {pairs}")

    def _finish(self, image_id: str):
        if not image_id:
            raise steps.StepFailed("No image was generated. Is your Dockerfile empty?")
        unused = sorted(set(self.options.build_args) - self.consumed - set(dispatch.PROXY_ARGS))
        if unused:
            names = " ".join(unused)
            yield {"stream": f"[Warning] One or more build-args [{names}] were not consumed\n"}
        self.image_id = image_id
        yield {"aux": {"ID": image_id}}
        yield {"stream": f"Successfully built {_short(image_id)}\n"}
        for tag in self.options.tags:
            self.images.tag(image_id, tag)
            yield {"stream": f"Successfully tagged {refs.parse(tag).familiar()}\n"}
        if self.options.quiet:
            yield {"stream": f"{image_id}\n", "final": True}


def _short(image_id: str) -> str:
    return image_id.removeprefix("sha256:")[:12]


def _state_from(image: Image | None, escape: str) -> StageState:
    if image is None:
        return StageState("", dispatch.initial_config({}), [], [], escape)
    config = image.config
    return StageState(
        image.id,
        dispatch.initial_config(config.get("config") or {}),
        list(image.record.layers),
        list(config.get("history") or []),
        escape,
    )
