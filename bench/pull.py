#!/usr/bin/env python3
"""Pull benchmark: `vmctl-agent pull` against podman, docker and the skopeo floor.

Builds a ~100 MB image of 5 layers (busybox + 4), pushes it to Debian's docker-registry on
loopback, then pulls it `--runs` times with each tool, round-robin (ours, podman, docker,
skopeo, ours, ...) so machine noise hits all of them alike. Every timed pull starts cold:

  ours    vmctl-agent pull --data-root <new empty dir>
  podman  podman --root <new empty dir> ... pull (overlay storage driver)
  docker  docker pull against one real dockerd started for the run; `rmi -f` + `image prune -af`
          before each pull
  skopeo  skopeo copy docker://... oci:<new dir>: transfer and verify only, no unpacking (the
          floor nothing that unpacks can beat)

Untimed between runs: the previous store is deleted and `sync()` flushes dirty pages, so no tool
pays for another's writeback (ours calls syncfs, which would otherwise flush the others' files).

    python3 bench/pull.py [--runs 5] [--only ours,skopeo] [--size-mb 100] [--warmup 1]
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from benchkit import cmdline, in_workdir, mounts_below, remove_tree, run  # noqa: E402, F401
from imagekit import (  # noqa: E402
    Image,
    RegistryClient,
    build_image,
    busybox_layer,
    directory,
    file,
    random_layer,
    tar_bytes,
)
from registry import Registry  # noqa: E402

from vmctl import agentapp  # noqa: E402

REPO, TAG = "bench/pull", "v1"
TOOLS = ("ours", "podman", "docker", "skopeo")
GOAL_VS_PODMAN = 1.0  # ours must be faster than podman
GOAL_VS_FLOOR = 2.0  # ... and within 2x of skopeo
MB = 1_000_000
DAEMON_TIMEOUT = 30.0
PULL_TIMEOUT = 600.0
ISSUE_REFERENCE = "podman 0.88 s, docker 1.12 s, skopeo 0.26 s"  # measured in the issue
PODMAN_RUNROOT_MAX = 50  # podman 4: "the specified runroot is longer than 50 characters"
# Empty /run dirs that podman and dockerd create whatever their flags; removed if we made them.
RUN_DIRS = (
    "/run/containers/networks",
    "/run/containers",
    "/run/docker/plugins",
    "/run/docker",
    "/run/mount",  # util-linux's utab dir, made when dockerd mounts its data root
)


class Unavailable(Exception):
    """A tool is not installed or its daemon would not start."""


class RunFailed(Exception):
    """A pull (or the untimed preparation for it) failed."""


# --------------------------------------------------------------------------- the image


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the bench image: what it imitates, and its uncompressed tar."""

    kind: str
    tar: bytes


def text_layer(size: int, seed: int, file_size: int) -> bytes:
    """Source-tree-like text (~2.3x gzip): `file_size`-byte files of words from a 4096-word
    vocabulary, 64 files a directory."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz_"
    vocab = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(4096)]
    words = rng.choices(vocab, k=size // 6)
    lines = [" ".join(words[i : i + 10]) for i in range(0, len(words), 10)]
    text = "\n".join(lines).encode()[:size]
    entries = [directory("src"), directory(f"src/{seed}")]
    for n, start in enumerate(range(0, len(text), file_size)):
        if n % 64 == 0:
            entries.append(directory(f"src/{seed}/pkg{n // 64:03d}"))
        chunk = text[start : start + file_size]
        entries.append(file(f"src/{seed}/pkg{n // 64:03d}/mod{n:05d}.txt", chunk))
    return tar_bytes(entries)


def sparse_layer(size: int, seed: int, files: int = 16) -> bytes:
    """Zero-heavy binaries (~7x gzip): each 64 KiB block is zeros around an 8 KiB random island."""
    rng = random.Random(seed)
    data = bytearray(size)
    for block in range(0, size, 65_536):
        at = block + rng.randrange(0, 65_536 - 8_192)
        island = rng.randbytes(8_192)[: max(0, size - at)]
        data[at : at + len(island)] = island
    step = size // files
    entries = [directory("var"), directory(f"var/{seed}")]
    for i in range(files):
        end = size if i == files - 1 else (i + 1) * step
        entries.append(file(f"var/{seed}/db-{i:02d}.bin", bytes(data[i * step : end])))
    return tar_bytes(entries)


def layer_plan(size_mb: int, text_file_kb: int) -> list[LayerSpec]:
    """busybox, then 4 layers sharing the rest of `size_mb` MB (uncompressed): 40% random assets,
    25% text, 20% random blobs, 15% sparse binaries."""
    base = busybox_layer()
    rest = max(size_mb * MB - len(base), 4 * MB)
    text = text_layer(int(rest * 0.25), seed=2, file_size=text_file_kb * 1024)
    return [
        LayerSpec("busybox (static binary)", base),
        LayerSpec("random assets", random_layer(int(rest * 0.40), seed=1, files=32)),
        LayerSpec(f"text, {text_file_kb} KiB files", text),
        LayerSpec("random blobs", random_layer(int(rest * 0.20), seed=3, files=8)),
        LayerSpec("sparse binaries", sparse_layer(int(rest * 0.15), seed=4)),
    ]


def count_entries(tar: bytes) -> int:
    """Members in an uncompressed tar (files, dirs, links)."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return len(archive.getmembers())


def build_bench_image(size_mb: int, text_file_kb: int) -> Image:
    """Build the image and print what is in it."""
    started = time.perf_counter()
    plan = layer_plan(size_mb, text_file_kb)
    image = build_image([spec.tar for spec in plan], config={"Cmd": ["/bin/sh"]})
    print(f"image: {len(plan)} layers, built in {time.perf_counter() - started:.1f} s")
    counts = [count_entries(spec.tar) for spec in plan]
    for spec, count, blob in zip(plan, counts, image.layers, strict=True):
        print(size_line(spec.kind, count, len(spec.tar), blob.size))
    tar_total = sum(len(spec.tar) for spec in plan)
    gz_total = sum(blob.size for blob in image.blobs())
    print(size_line("total (gzip incl. config)", sum(counts), tar_total, gz_total))
    return image


def size_line(kind: str, entries: int, tar_size: int, gz_size: int) -> str:
    """One row of the image summary."""
    return (
        f"  {kind:<26} {entries:5d} entries {tar_size / MB:6.1f} MB tar {gz_size / MB:6.1f} MB gzip"
        f" ({tar_size / gz_size:.1f}x)"
    )


# --------------------------------------------------------------------------- helpers


def failure(what: str, proc: subprocess.CompletedProcess[str]) -> RunFailed:
    """A RunFailed carrying the exit status and the end of stderr (or stdout)."""
    tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:])
    return RunFailed(f"{what} exited {proc.returncode}:\n{tail}")


def wait_for_server(proc, docker, field: str, what: str, log_tail, poll: float) -> str:
    """Poll `docker version` until the engine `proc` answers; returns the `field` it prints."""
    deadline = time.monotonic() + DAEMON_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"{what} exited {proc.returncode}:\n{log_tail()}")
        out = docker("version", "--format", field)
        if out.returncode == 0:
            return out.stdout.strip()
        time.sleep(poll)
    raise Unavailable(f"{what} not ready in {DAEMON_TIMEOUT:.0f} s:\n{log_tail()}")


def version(argv: list[str]) -> str:
    """First line of a `--version`-style command, or '?'."""
    try:
        out = run(argv, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "?"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if out.returncode == 0 and lines else "?"


def need(binary: str) -> str:
    """Path to `binary` on PATH, or Unavailable."""
    path = shutil.which(binary)
    if path is None:
        raise Unavailable(f"{binary} is not installed")
    return path


# --------------------------------------------------------------------------- the tools


@dataclass
class Tool:
    """A puller: untimed `prepare()`, a timed `argv()`, untimed `after()`; `start`/`stop` once."""

    name: str
    ref: str
    scratch: Path
    version: str = ""
    times: list[float] = field(default_factory=list)
    error: str | None = None

    def start(self) -> None:
        """Check the tool exists (and start its daemon); raise Unavailable if not."""

    def prepare(self, n: int) -> None:
        """Make run `n` cold (untimed)."""

    def argv(self, n: int) -> list[str]:
        raise NotImplementedError

    def after(self, n: int) -> None:
        """Clean up after run `n` (untimed)."""

    def stop(self) -> None:
        """Stop daemons and remove this tool's files; must be safe after a failed start."""
        remove_tree(self.scratch)


class Ours(Tool):
    """`vmctl-agent pull` into a new, empty data root each run, run as it is deployed in the
    guest: the agent's zipapp under Debian's python3 (`--agent console` uses the console
    script next to this interpreter instead)."""

    mode = "zipapp"

    def start(self) -> None:
        if self.mode == "zipapp":
            pyz = agentapp.build(self.scratch / "vmctl-agent.pyz")
            self.command = [need("/usr/bin/python3"), "-I", "-S", str(pyz)]
        else:  # a pyenv shim would add ~0.1 s of bash: take the script beside this python
            beside = Path(sys.executable).with_name("vmctl-agent")
            self.command = [str(beside) if beside.is_file() else need("vmctl-agent")]
        self.version = version([*self.command, "--version"]) + f" ({self.mode})"

    def root(self, n: int) -> Path:
        return self.scratch / f"root-{n}"

    def prepare(self, n: int) -> None:
        self.root(n).mkdir(parents=True)

    def argv(self, n: int) -> list[str]:
        return [*self.command, "pull", "--data-root", str(self.root(n)), self.ref]

    def after(self, n: int) -> None:
        remove_tree(self.root(n))


class Podman(Tool):
    """`podman pull` with overlay storage in a new root each run; libpod state kept inside it."""

    def start(self) -> None:
        self.binary = need("podman")
        runroot = self.root(99) / "rr"
        if len(str(runroot)) > PODMAN_RUNROOT_MAX:
            raise Unavailable(f"runroot {runroot} is over podman's 50-char limit; use --workdir")
        self.version = version([self.binary, "--version"])

    def root(self, n: int) -> Path:
        return self.scratch / str(n)

    def prepare(self, n: int) -> None:
        self.root(n).mkdir(parents=True)

    def argv(self, n: int) -> list[str]:
        r = self.root(n)
        return [
            self.binary,
            *("--root", str(r / "root"), "--runroot", str(r / "rr")),
            *("--tmpdir", str(r / "libpod"), "--network-config-dir", str(r / "net")),
            *("--storage-driver", "overlay"),
            *("--cgroup-manager", "cgroupfs", "--events-backend", "file"),  # no systemd here
            *("pull", "--tls-verify=false", self.ref),
        ]

    def after(self, n: int) -> None:
        remove_tree(self.root(n))


class Docker(Tool):
    """`docker pull` against a real dockerd (and its containerd) started once for the bench."""

    proc: subprocess.Popen[bytes] | None = None
    children: tuple[int, ...] = ()

    def start(self) -> None:
        self.dockerd, self.cli = need("dockerd"), need("docker")
        self.scratch.mkdir(parents=True)
        self.sock = f"unix://{self.scratch / 'docker.sock'}"
        self.env = {**os.environ, "DOCKER_CONFIG": str(self.scratch / "cli")}
        self.log = self.scratch / "dockerd.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.daemon_argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.wait_ready()
        self.children = self.child_pids()
        self.version = f"{version([self.cli, '--version'])}; dockerd {self.server_version}"

    def daemon_argv(self) -> list[str]:
        d = self.scratch
        return [
            self.dockerd,
            *("--data-root", str(d / "data"), "--exec-root", str(d / "exec")),
            *("-H", self.sock, "--pidfile", str(d / "docker.pid")),
            "--insecure-registry=127.0.0.0/8",
            # a pull needs no networking; without these dockerd makes docker0, iptables rules,
            # sets FORWARD to DROP and turns on ip_forward on the host
            *("--iptables=false", "--ip-forward=false", "--bridge=none"),
        ]

    def wait_ready(self) -> None:
        assert self.proc is not None
        self.server_version = wait_for_server(
            self.proc, self.docker, "{{.Server.Version}}", "dockerd", self.log_tail, 0.2
        )

    def child_pids(self) -> tuple[int, ...]:
        """dockerd's children (its containerd), to end them if dockerd dies without doing so."""
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return tuple(int(p) for p in path.read_text().split())
        except OSError:
            return ()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([self.cli, "-H", self.sock, *args], env=self.env, timeout=120)

    def prepare(self, n: int) -> None:
        self.docker("rmi", "-f", self.ref)  # fails harmlessly if the image is absent
        prune = self.docker("image", "prune", "-af")
        if prune.returncode != 0:
            raise failure("docker image prune -af", prune)
        left = self.docker("image", "ls", "-qa")
        if left.returncode != 0 or left.stdout.strip():
            raise RunFailed(f"docker still has images after rmi + prune: {left.stdout.split()}")

    def argv(self, n: int) -> list[str]:
        return [self.cli, "-H", self.sock, "pull", self.ref]

    def stop(self) -> None:
        if self.proc is not None:
            self.terminate(self.proc)
        for pid in self.children:
            end_pid(pid, "containerd")
        super().stop()

    @staticmethod
    def terminate(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=DAEMON_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Skopeo(Tool):
    """`skopeo copy docker://... oci:DIR`: download and verify, no unpacking (the floor)."""

    def start(self) -> None:
        self.binary = need("skopeo")
        self.version = version([self.binary, "--version"])

    def target(self, n: int) -> Path:
        return self.scratch / f"oci-{n}"

    def prepare(self, n: int) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)

    def argv(self, n: int) -> list[str]:
        source = f"docker://{self.ref}"
        return [
            self.binary,
            "copy",
            "--src-tls-verify=false",
            source,
            f"oci:{self.target(n)}:latest",
        ]

    def after(self, n: int) -> None:
        remove_tree(self.target(n))


def end_pid(pid: int, comm: str, grace: float = 10.0) -> None:
    """SIGTERM a process we started (by pid, if still named `comm`), SIGKILL it if it lingers."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != comm:
            return  # gone, and the pid reused
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


TOOL_CLASSES: dict[str, Callable[..., Tool]] = {
    "ours": Ours,
    "podman": Podman,
    "docker": Docker,
    "skopeo": Skopeo,
}


# --------------------------------------------------------------------------- running


def timed_run(tool: Tool, n: int) -> float:
    """Prepare (untimed), pull (timed), clean up (untimed); RunFailed on any failure."""
    try:
        tool.prepare(n)
        os.sync()  # nobody pays for the previous tool's dirty pages
        started = time.perf_counter()
        proc = run(tool.argv(n), timeout=PULL_TIMEOUT)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise failure(f"{tool.name} pull", proc)
        return elapsed
    except subprocess.TimeoutExpired as e:
        raise RunFailed(f"{tool.name}: {e}") from e
    finally:
        tool.after(n)


def run_round(tools: list[Tool], n: int, label: str, record: bool) -> None:
    """One pull per live tool, in order; a failing tool is reported and dropped."""
    measure_round(
        tools,
        f"{label:<9}",
        record,
        timed=lambda tool: timed_run(tool, n),
        show=lambda elapsed: f"{elapsed:5.2f}s",
        failed=f"run {n} failed",
    )


def measure_round(
    tools: list[Tool],
    label: str,
    record: bool,
    timed: Callable[[Tool], float],
    show: Callable[[float], str],
    failed: str,
) -> None:
    """Time each live tool once, in order, and print the round on one line; a tool whose run
    fails is reported and dropped from the rest of the bench (every bench script's round)."""
    cells = []
    for tool in tools:
        if tool.error:
            continue
        try:
            elapsed = timed(tool)
        except RunFailed as e:
            tool.error = f"{failed}: {e}"
            print(f"  {tool.name}: FAILED, dropped from the bench: {e}", flush=True)
            continue
        if record:
            tool.times.append(elapsed)
        cells.append(f"{tool.name} {show(elapsed)}")
    print(f"  {label} " + "  ".join(cells), flush=True)


def start_tools(names: list[str], ref: str, scratch: Path) -> list[Tool]:
    """Start each selected tool; one that cannot start is reported and left out."""
    started = []
    for name in names:
        tool = TOOL_CLASSES[name](name, ref, scratch / name)
        try:
            tool.start()
        except (Unavailable, OSError, subprocess.SubprocessError) as e:
            print(f"{name}: not available, skipped: {e}", flush=True)
            tool.stop()
            continue
        print(f"{name}: {tool.version}\n  $ {' '.join(tool.argv(0))}", flush=True)
        started.append(tool)
    return started


# --------------------------------------------------------------------------- report


def median(tool: Tool) -> float | None:
    return statistics.median(tool.times) if tool.times else None


def print_table(tools: list[Tool]) -> None:
    by_name = {t.name: t for t in tools}
    ours = median(by_name["ours"]) if "ours" in by_name else None
    print(f"\n{'tool':<8} {'median s':>9} {'min s':>7} {'max s':>7} {'runs':>5} {'vs ours':>8}")
    for tool in tools:
        med = median(tool)
        if med is None:
            reason = (tool.error or "").splitlines()[0] if tool.error else ""
            print(f"{tool.name:<8} {'-':>9} {'-':>7} {'-':>7} {0:>5}  {reason}")
            continue
        ratio = f"{med / ours:7.2f}x" if ours else "-"
        lo, hi = min(tool.times), max(tool.times)
        print(f"{tool.name:<8} {med:9.3f} {lo:7.3f} {hi:7.3f} {len(tool.times):>5} {ratio:>8}")
    print(f"\nthe issue measured: {ISSUE_REFERENCE}; goals:")
    print_goal("ours / skopeo floor", ours, by_name.get("skopeo"), GOAL_VS_FLOOR, "<=")
    print_goal("ours / podman", ours, by_name.get("podman"), GOAL_VS_PODMAN, "<")


def print_goal(label: str, ours: float | None, peer: Tool | None, goal: float, op: str) -> None:
    """One goal line: the ratio, the goal, and whether it is met."""
    peer_median = median(peer) if peer else None
    if ours is None or peer_median is None:
        print(f"{label:<20} n/a (goal {op} {goal:.1f}: not measured)")
        return
    ratio = ours / peer_median
    met = ratio <= goal if op == "<=" else ratio < goal
    print(f"{label:<20} {ratio:5.2f}  (goal {op} {goal:.1f}: {'met' if met else 'NOT met'})")


def git_revision() -> str:
    rev = run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]).stdout.strip()
    dirty = run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"])
    return f"{rev or '?'}{' + uncommitted changes' if dirty.stdout.strip() else ''}"


def print_machine() -> None:
    cpus = len(os.sched_getaffinity(0))
    print(f"machine: {cpus} cpus (nproc), {platform.system()} {platform.release()}, ", end="")
    print(f"Python {platform.python_version()}; git {git_revision()}")


# --------------------------------------------------------------------------- main


@contextmanager
def run_dirs_restored(dirs: tuple[str, ...] = RUN_DIRS) -> Iterator[None]:
    """Remove the empty /run dirs that podman/dockerd create if they were not there before."""
    existing = {d for d in dirs if os.path.lexists(d)}
    try:
        yield
    finally:
        for d in dirs:
            if d not in existing:
                with suppress(OSError):  # not created, or not empty: leave it
                    os.rmdir(d)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed pulls per tool (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--size-mb", type=int, default=100, help="uncompressed image size")
    parser.add_argument(
        "--text-file-kb", type=int, default=64, help="file size in the text layer (default 64)"
    )
    parser.add_argument("--only", default=",".join(TOOLS), help="comma-separated subset of tools")
    parser.add_argument("--workdir", default=None, help="where the temp dir goes (default /tmp)")
    parser.add_argument(
        "--agent",
        choices=("zipapp", "console"),
        default="zipapp",
        help="run ours as the guest does (zipapp, Debian python3) or via the console script",
    )
    args = parser.parse_args(argv)
    args.only = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = set(args.only) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {', '.join(TOOLS)}")
    args.only = [t for t in TOOLS if t in args.only]  # keep the round-robin order fixed
    return args


def bench(args: argparse.Namespace, workdir: Path) -> None:
    print_machine()
    Ours.mode = args.agent
    image = build_bench_image(args.size_mb, args.text_file_kb)
    registry = Registry(workdir / "registry")
    tools: list[Tool] = []
    try:
        RegistryClient(registry.url).push_image(REPO, TAG, image)
        ref = f"{registry.host}/{REPO}:{TAG}"
        print(f"pushed {ref}\n")
        tools = start_tools(args.only, ref, workdir)
        if not tools:
            print("no tools to run")
            return
        print(f"\n{args.runs} timed round(s) after {args.warmup} warm-up, order: ", end="")
        print(", ".join(t.name for t in tools), flush=True)
        for n in range(args.warmup):
            run_round(tools, n, f"warm-up {n + 1}", record=False)
        for n in range(args.runs):
            run_round(tools, args.warmup + n, f"run {n + 1}", record=True)
        print_table(tools)
    finally:
        for tool in tools:
            tool.stop()
        registry.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return in_workdir(args.workdir, functools.partial(bench, args), run_dirs_restored())


if __name__ == "__main__":
    sys.exit(main())
