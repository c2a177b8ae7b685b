"""The steps that write files: RUN in a container on the runtime (confined as `docker run`
confines, on the engine's default network unless the build asks for another), COPY, ADD and
WORKDIR through the image mounted with a fresh upper directory. Each yields the build's
stream messages and returns the step's layer (None when no file changed).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import stat
import urllib.parse
import urllib.request
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from vmctl_agent.build import copier, layertar, overlay, words
from vmctl_agent.build.dispatch import StageState
from vmctl_agent.build.dockerfile import Instruction
from vmctl_agent.errors import AgentError
from vmctl_agent.runtime import logs as logfile
from vmctl_agent.runtime.containers import Runtime
from vmctl_agent.runtime.index import ContainerNotFound
from vmctl_agent.runtime.spec import CreateOptions
from vmctl_agent.store.content import short_lower
from vmctl_agent.store.images import ImageStore

# What the runtime itself makes in a container's upper directory (mount points, the files it
# binds its /etc files over): not the step's work, so not in its layer, as with dockerd's
# init layer.
_MOUNT_POINTS = ("proc", "sys", "dev")
_ETC_FILES = ("etc/hostname", "etc/hosts", "etc/resolv.conf")


class StepFailed(AgentError):
    """A step that did not work; `code` is the exit code the docker CLI should exit with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class ClientGone(AgentError):
    """The client hung up mid-build: the running step is stopped and cleaned up."""


STDERR_ON, STDERR_OFF = "\x1b[91m", "\x1b[0m"  # dockerd's classic builder colours stderr red


@dataclass(frozen=True)
class RunLimits:
    """What the build's options give each RUN's container."""

    network: str = "none"
    memory: int = 0
    nano_cpus: int = 0
    shm_size: int = 0
    extra_hosts: tuple[str, ...] = ()


def runtime_made(path: str, info: os.stat_result) -> bool:
    """What the runtime made in a container's upper directory, not the container's work."""
    if path in _MOUNT_POINTS:
        return stat.S_ISDIR(info.st_mode)
    return path in _ETC_FILES and stat.S_ISREG(info.st_mode) and info.st_size == 0


def run(
    runtime: Runtime, state: StageState, cmd: list[str], env: list[str], limits: RunLimits,
    remove: bool, save: Callable[[Path, str], str], alive: Callable[[], bool] = lambda: True,
    noted: Callable[[str], None] = lambda container_id: None,
) -> Generator[dict, None, str]:  # fmt: skip
    """RUN: the command in a container from the stage's image, then `save(upper dir,
    container id)` (which makes the step's image; its id is returned) before the container
    goes. `alive` False (the client left) stops it; `noted` hears of a container meant to
    go (for a sweep, should the agent die first)."""
    container = runtime.create(_options(state, cmd, env, limits))
    if remove:
        noted(container.id)
    short = container.id[:12]
    try:
        yield {"stream": f" ---> Running in {short}\n"}
        yield from _execute(runtime, container, cmd, alive)
        image_id = save(container.directory / "upper", container.id)
    except (ClientGone, GeneratorExit):
        remove = True  # nobody will ever see or remove this container
        raise
    finally:
        if remove:
            with contextlib.suppress(AgentError, OSError):
                runtime.remove(container.id, force=True)
    if remove:
        yield {"stream": f" ---> Removed intermediate container {short}\n"}
    return image_id


def _options(state: StageState, cmd: list[str], env: list[str], limits: RunLimits):
    """The step's container: the stage's image, user and directory, the build's ARGs in its
    environment, confined as `docker run` confines."""
    return CreateOptions(
        image=state.image_id,
        cmd=tuple(cmd),
        entrypoint=(),
        env=tuple(env),
        working_dir=state.config.get("WorkingDir") or "",
        user=state.config.get("User") or "",
        network=limits.network,
        memory=limits.memory,
        nano_cpus=limits.nano_cpus,
        shm_size=limits.shm_size,
        extra_hosts=limits.extra_hosts,
    )


def _execute(runtime: Runtime, container, cmd: list[str], alive) -> Iterator[dict]:
    """Start it, stream its output, and fail as dockerd does if it exits non-zero."""
    runtime.start(container.id)
    log = str(container.directory / "container-json.log")
    running = functools.partial(_running, runtime, container.id, alive)
    for entry in logfile.read(log, follow=True, running=running):
        text = entry.data.decode("utf-8", "replace")
        yield {"stream": f"{STDERR_ON}{text}{STDERR_OFF}" if entry.stream == "stderr" else text}
    code = runtime.wait(container.id).state.exit_code
    if code != 0:
        raise StepFailed(f"The command '{' '.join(cmd)}' returned a non-zero code: {code}", code)


def _running(runtime: Runtime, container_id: str, alive: Callable[[], bool]) -> bool:
    """Whether the step still runs; a client that has gone stops it (ClientGone)."""
    if not alive():
        raise ClientGone("the client went away mid-build")
    try:
        return runtime.get(container_id).state.running
    except ContainerNotFound:
        return False


def heredoc_command(state: StageState, ins: Instruction) -> list[str]:
    """`RUN <<EOF` runs the document as the script (with the interpreter its `#!` line
    names, if it has one); `RUN cmd <<EOF` gives the shell the command line with its
    documents after it, as BuildKit does."""
    only = ins.heredocs[0]
    if len(ins.heredocs) == 1 and ins.args.strip().lstrip("<-\"'").rstrip("\"'") == only.name:
        if only.content.startswith("#!"):
            return [*state.shell(), _interpreted(only.content)]
        return [*state.shell(), only.content]
    script = ins.args + "\n" + "".join(f"{h.content}{h.name}\n" for h in ins.heredocs)
    return [*state.shell(), script]


def _interpreted(content: str) -> str:
    """A shell line that runs `content` with its `#!` interpreter, the script read from a
    descriptor the shell fills: no file is written into the step's layer."""
    first, _, _ = content.partition("\n")
    interpreter = first[2:].strip()
    end = "VMCTL_SCRIPT_" + hashlib.sha256(content.encode()).hexdigest()[:16]
    return f"exec {interpreter} /dev/fd/3 3<<'{end}'\n{content}{end}\n"


# -- files through the mounted image -------------------------------------------------------------


def _lower_dirs(images: ImageStore, layers: list[dict]) -> list[str]:
    """Top first, by their short names (so as many layers fit as in a container's mount)."""
    dirs = (images.content.layer_dir(layer["diff_id"]) for layer in reversed(layers))
    return [short_lower(str(d)) for d in dirs]


def mounted(images: ImageStore, state: StageState, work: Path, action, source_layers=None):
    """`action(root[, source_root])` on the stage's image (and a `--from` image, read-only);
    returns (action's result, the step's layer or None). The layer is made only if
    `action` returns a result whose `skip` is False. `work` is in the build's workspace.
    Call with the store's gc lock held shared until the layer is in an image."""
    lowers = [_lower_dirs(images, state.layers)]
    if source_layers is not None:
        lowers.append(_lower_dirs(images, source_layers))
    work.mkdir()
    result = overlay.run_mounted(images.content.layers, lowers, work, action)
    if getattr(result, "skip", False):
        return result, None
    # The upper directory becomes the layer's when it can; what is left of `work` goes with
    # the build's workspace, after the answer (a client does not wait for its unlinks).
    return result, layertar.store_layer(images.content, work / "upper", adopt=True)


def make_workdir(root: str, path: str) -> None:
    """WORKDIR's directory, made (0755, root's) if missing, as dockerd makes it."""
    target = copier.Target(path, 0, 0, None, False)
    copier.make_dir(root, path, target)


def chown_ids(root: str, spec: str) -> tuple[int, int]:
    """`--chown=user[:group]` from the image's own /etc/passwd and /etc/group; a user alone
    means the same number as group, as the classic builder has it."""
    user, _, group = spec.partition(":")
    uid = _lookup(root, "etc/passwd", user, "user")
    gid = _lookup(root, "etc/group", group, "group") if group else uid
    return uid, gid


def _lookup(root: str, file: str, name: str, what: str) -> int:
    if name.isdigit():
        return int(name)
    path = overlay.scoped(root, file)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 2 and fields[0] == name and fields[2].isdigit():
                    return int(fields[2])
    except OSError:
        pass
    kind = "uid" if what == "user" else "gid"
    raise StepFailed(
        f"unable to convert uid/gid chown string to host mapping: can't find {kind} "
        f"for {what} {name}: no such {what}: {name}"
    )


def heredoc_sources(ins: Instruction, variables: dict, escape: str, scratch: Path):
    """COPY <<EOF: each document as a file named after its delimiter."""
    found = []
    for doc in ins.heredocs:
        content = _expand_document(doc.content, variables, escape) if doc.expand else doc.content
        path = scratch / f"heredoc-{os.urandom(4).hex()}"
        path.mkdir()
        (path / doc.name).write_text(content)
        os.chmod(path / doc.name, 0o644)
        found.append(copier.Source(doc.name, str(path / doc.name)))
    return found


def _expand_document(text: str, variables: dict, escape: str) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        out.append(
            words.expand(body.replace('"', '\\"').replace("'", "\\'"), variables, escape)
            + line[len(body) :]
        )
    return "".join(out)


def download(url: str, scratch: Path, checksum: str | None) -> copier.Source:
    """ADD's remote file: fetched from where the engine runs, 0600, its Last-Modified time."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or "index.html"
    directory = scratch / f"url-{os.urandom(4).hex()}"
    directory.mkdir()
    path = directory / name
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
            modified = response.headers.get("Last-Modified")
    except (OSError, ValueError) as e:
        raise StepFailed(f"failed to GET {url}: {e}") from None
    os.chmod(path, 0o600)
    if modified:
        with contextlib.suppress(TypeError, ValueError):
            stamp = parsedate_to_datetime(modified).timestamp()
            os.utime(path, (stamp, stamp))
    if checksum is not None:
        _verify_checksum(path, checksum, url)
    return copier.Source(name, str(path))


def _verify_checksum(path: Path, checksum: str, url: str) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if checksum.removeprefix("sha256:") != digest:
        raise StepFailed(f"digest mismatch for {url}: expected {checksum}, got sha256:{digest}")
