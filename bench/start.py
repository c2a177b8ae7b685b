#!/usr/bin/env python3
"""Start benchmark: create → start → exit of `true` in busybox, our runtime against `runc run`.

Ours goes through the runtime's own Python API, in this process, as the agent calls it:

  ours  Runtime.create(image, cmd=true) → start → wait (exit code checked); `remove` is timed
        apart, so "ours incl. remove" is the like-for-like with `runc run`, which deletes
  runc  runc --root <state> run --bundle <bundle> <new id>: Debian's runc 1.1 on an OCI bundle
        of the same rootfs (copied from our store), config from `runc spec` with args [true],
        no terminal and a writable root; its default namespaces (pid, net, ipc, uts, mount)
        are the ones ours makes

Runs alternate (ours, runc, ours, runc, ...) after `--warmup` untimed rounds, so machine noise
hits both alike. The image is built, pushed to a loopback registry and pulled into our store by
a child process (`--prepare`): each start of ours forks this process (the shim, then the
container's first process), so the test kit's modules here would make every fork dearer than
the agent's; the helpers shared with the other benches come from benchkit, which loads none.

    python bench/start.py [--runs 100] [--warmup 5] [--profile] [--workdir DIR]   (as root)
"""

from __future__ import annotations

import argparse
import functools
import gc
import glob
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from benchkit import cmdline, in_workdir, remove_tree
from vmctl_agent import __version__ as agent_version
from vmctl_agent import syscalls as sc
from vmctl_agent.runtime.containers import Runtime
from vmctl_agent.runtime.index import Container
from vmctl_agent.runtime.spec import CreateOptions
from vmctl_agent.store.images import ImageStore

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO, TAG = "bench/busybox", "v1"
COMMAND = ("true",)
STEPS = ("create", "start", "wait", "remove")
GOAL = 1.0  # ours / runc, create → exit
ISSUE_REFERENCE = "runc ~37 ms"
RUN_TIMEOUT = 30.0
PROFILE_CYCLES = 20
PROFILE_TOP = 15
RUNC_CANDIDATES = ("/usr/sbin/runc", "runc")
RUNC_FLAG_TRIES = ((), ("--no-pivot",))  # what `runc run` may need on odd hosts
TEST_KIT = ("imagekit", "registry", "agentkit", "requests")  # must stay out of this process
CGROUP_ROOT = Path("/sys/fs/cgroup")
OUR_CGROUP_PARENT = "vmctl"
ZOMBIE_OF_INIT = "[Z ppid 1]"  # exited detached shims, for init to reap
ZOMBIES = "zombie shims awaiting pid 1"
NAMESPACE_FLAGS = (
    (sc.CLONE_NEWNS, "mount"),
    (sc.CLONE_NEWUTS, "uts"),
    (sc.CLONE_NEWIPC, "ipc"),
    (sc.CLONE_NEWNET, "network"),
    (sc.CLONE_NEWCGROUP, "cgroup"),
)


class Unavailable(Exception):
    """A peer is not installed or cannot run a container here."""


class RunFailed(Exception):
    """One create → exit run failed."""


# --------------------------------------------------------------------------- helpers


def run(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    """Run to completion, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, **kw)


def tail(text: str, lines: int = 10) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def mountinfo() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding `path` (the longest mount point above it)."""
    best, fstype = "", "?"
    for line in mountinfo():
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape")
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, fstype = point, fields[fields.index("-") + 1]
    return fstype


def read_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def where(error: BaseException) -> str:
    """file:line of the innermost frame an exception came from."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno} {frames[-1].name}"


def process_start_time(pid: int) -> int | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(data[data.rindex(b")") + 2 :].split()[19])


# --------------------------------------------------------------------------- the image


def prepare_image(workdir: Path) -> str:
    """Build, push and pull the busybox image into workdir/data by a child process (so the
    test kit never loads here); returns the reference to run."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--prepare", str(workdir)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as proc:
        out, _ = proc.communicate()  # its stderr goes straight to ours
    if proc.returncode != 0:
        raise SystemExit(f"preparing the image failed (exit {proc.returncode})")
    return json.loads(out)["ref"]


def prepare_main(workdir: Path) -> int:
    """In the child: registry up, image built and pushed, pulled into our store, registry down."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    import imagekit as ik
    from agentkit import pull
    from registry import Registry

    image = ik.build_image([ik.busybox_layer()], config={"Cmd": ["/bin/sh"]})
    registry = Registry(workdir / "registry")
    try:
        ik.RegistryClient(registry.url).push_image(REPO, TAG, image)
        ref = f"{registry.host}/{REPO}:{TAG}"
        pull(ImageStore(workdir / "data" / "image"), ref)
    finally:
        registry.stop()
    shutil.rmtree(workdir / "registry", ignore_errors=True)
    print(json.dumps({"ref": ref}))
    return 0


# --------------------------------------------------------------------------- the peers


@dataclass
class Peer:
    """A way to run `true`; `once(n)` returns the seconds of each timed step of run n."""

    name: str
    version: str = ""
    error: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)

    def once(self, n: int) -> dict[str, float]:
        raise NotImplementedError

    def record(self, steps: dict[str, float]) -> None:
        for step, seconds in steps.items():
            self.samples.setdefault(step, []).append(seconds)


class Ours(Peer):
    """The runtime's Python API, in this process; every run a new container, removed after."""

    def __init__(self, data_root: Path, ref: str) -> None:
        super().__init__("ours", f"vmctl-agent {agent_version} (in-process API)")
        self.store = ImageStore(data_root / "image")
        self.runtime = Runtime(data_root, self.store)
        self.ref = ref
        self.ids: list[str] = []
        self.processes: list[tuple[int, int]] = []  # (pid, start time): containers, shims

    def once(self, n: int) -> dict[str, float]:
        rt, step, marks = self.runtime, "create", [time.perf_counter()]
        try:
            container_id = rt.create(CreateOptions(image=self.ref, cmd=COMMAND)).id
            marks.append(time.perf_counter())
            self.ids.append(container_id)
            step = "start"
            self.note(rt.start(container_id))
            marks.append(time.perf_counter())
            step = "wait"
            done = rt.wait(container_id, timeout=RUN_TIMEOUT)
            marks.append(time.perf_counter())
            step = "remove"
            rt.remove(container_id)
            marks.append(time.perf_counter())
        except Exception as e:
            self.remove_all()
            raise RunFailed(f"{step}: {type(e).__name__}: {e} (at {where(e)})") from e
        if done.state.exit_code != 0 or done.state.error:
            raise RunFailed(f"`true` exited {done.state.exit_code} {done.state.error}".strip())
        steps = dict(zip(STEPS, itertools.pairwise(marks), strict=True))
        times = {step: end - begin for step, (begin, end) in steps.items()}
        return {**times, "exit": marks[3] - marks[0], "total": marks[4] - marks[0]}

    def note(self, started: Container) -> None:
        state = started.state
        self.processes += [(state.pid, state.start_time), (state.shim_pid, state.shim_start_time)]

    def namespaces(self) -> list[str]:
        """What a start of ours unshares: the shim's pid namespace, then the launch's flags."""
        probe = self.runtime.create(CreateOptions(image=self.ref, cmd=COMMAND))
        try:
            flags = probe.config.launch(probe.directory, self.runtime.cgroups.version).namespaces
        finally:
            self.runtime.remove(probe.id)
        return ["pid", *(name for flag, name in NAMESPACE_FLAGS if flags & flag)]

    def remove_all(self) -> None:
        for container in self.runtime.list(all=True):
            with suppress(Exception):
                self.runtime.remove(container.id, force=True)


class Runc(Peer):
    """`runc run` on an OCI bundle of the same rootfs; each run a new id, state in the workdir."""

    def __init__(self, workdir: Path, rootfs: Path) -> None:
        super().__init__("runc")
        self.binary = find_runc()
        self.version = run([self.binary, "--version"]).stdout.splitlines()[0]
        self.bundle = workdir / "bundle"
        self.state = workdir / "runc-state"
        self.prefix = f"vmctl-bench-{os.getpid()}-"
        self.flags: tuple[str, ...] = ()
        self.ids: list[str] = []
        make_bundle(self.binary, self.bundle, rootfs)

    @property
    def config(self) -> dict:
        return json.loads((self.bundle / "config.json").read_text())

    def argv(self, container_id: str) -> list[str]:
        base = [self.binary, "--root", str(self.state), "run", *self.flags]
        return [*base, "--bundle", str(self.bundle), container_id]

    def once(self, n: int) -> dict[str, float]:
        container_id = f"{self.prefix}{n}"
        self.ids.append(container_id)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                self.argv(container_id),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=RUN_TIMEOUT,
            )
        except subprocess.TimeoutExpired as e:
            self.delete(container_id)
            raise RunFailed(f"runc run timed out after {RUN_TIMEOUT:.0f} s") from e
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            self.delete(container_id)
            stderr = tail(proc.stderr.decode(errors="replace"))
            raise RunFailed(f"runc run exited {proc.returncode}: {stderr}")
        return {"run": elapsed}

    def probe(self) -> str:
        """Find the flags `runc run` needs here; say which (Unavailable if none work)."""
        errors = []
        for flags in RUNC_FLAG_TRIES:
            self.flags = flags
            try:
                self.once(-1 - len(errors))
            except RunFailed as e:
                errors.append(f"{' '.join(flags) or 'plain'}: {e}")
                continue
            if not flags:
                return "plain `runc run` works here: no --no-pivot, no cgroup changes"
            return f"runc needs {' '.join(flags)} here; plain run failed: {errors[0]}"
        raise Unavailable("runc cannot run the bundle here:\n  " + "\n  ".join(errors))

    def listed(self) -> list[str]:
        """Containers runc still knows in its state dir."""
        if not self.state.exists():
            return []
        out = run([self.binary, "--root", str(self.state), "list", "-q"])
        return out.stdout.split()

    def delete(self, container_id: str) -> None:
        run([self.binary, "--root", str(self.state), "delete", "-f", container_id])


def find_runc() -> str:
    for candidate in RUNC_CANDIDATES:
        path = shutil.which(candidate)
        if path:
            return path
    raise Unavailable("runc is not installed (apt-get install runc)")


def make_bundle(runc: str, bundle: Path, rootfs: Path) -> None:
    """`runc spec` in `bundle`, edited to run `true` without a terminal on a writable rootfs."""
    shutil.copytree(rootfs, bundle / "rootfs", symlinks=True)
    spec = run([runc, "spec", "--bundle", str(bundle)])
    if spec.returncode != 0:
        raise Unavailable(f"runc spec exited {spec.returncode}: {tail(spec.stderr)}")
    path = bundle / "config.json"
    config = json.loads(path.read_text())
    config["process"]["args"] = list(COMMAND)
    config["process"]["terminal"] = False
    config["root"] = {"path": "rootfs", "readonly": False}
    path.write_text(json.dumps(config, indent=2))


def image_rootfs(ours: Ours) -> Path:
    """The busybox image's one layer, unpacked in our store: the rootfs both peers run."""
    diff_ids = ours.store.get(ours.ref).record.diff_ids
    if len(diff_ids) != 1:
        raise SystemExit(f"expected a one-layer image, got {len(diff_ids)} layers")
    return ours.store.content.layer_dir(diff_ids[0])


def print_namespaces(ours: Ours) -> None:
    """The namespaces a start of ours makes; a runtime that cannot even create is dropped."""
    try:
        names = ours.namespaces()
    except Exception as e:
        ours.error = f"cannot create a container: {type(e).__name__}: {e}"
        print(f"ours: FAILED, dropped from the bench: {ours.error}", flush=True)
        return
    print(f"  namespaces: {', '.join(sorted(names))}", flush=True)


def start_runc(workdir: Path, ours: Ours) -> Runc | None:
    """A working runc, or None (reported) if it is missing or cannot run the bundle."""
    try:
        runc = Runc(workdir, image_rootfs(ours))
        note = runc.probe()
    except (Unavailable, OSError) as e:
        print(f"runc: not available, skipped: {e}", flush=True)
        return None
    print(f"runc: {runc.version}; {note}")
    print(f"  $ {' '.join(runc.argv(runc.prefix + 'N'))}")
    namespaces = sorted(n["type"] for n in runc.config["linux"]["namespaces"])
    print(f"  namespaces: {', '.join(namespaces)} (runc spec's default)", flush=True)
    return runc


# --------------------------------------------------------------------------- running


def run_round(peers: list[Peer], n: int, record: bool) -> dict[str, float]:
    """One run per live peer, in order; a failing peer is reported and dropped."""
    shown = {}
    for peer in peers:
        if peer.error:
            continue
        try:
            steps = peer.once(n)
        except RunFailed as e:
            peer.error = f"run {n} failed: {e}"
            print(f"  {peer.name}: FAILED, dropped from the bench: {e}", flush=True)
            continue
        if record:
            peer.record(steps)
        shown[peer.name] = steps.get("exit", steps.get("run", 0.0))
    return shown


def run_all(peers: list[Peer], runs: int, warmup: int) -> None:
    """Warm-up rounds, then `runs` timed rounds, with a progress line every tenth."""
    order = ", ".join(p.name for p in peers)
    print(f"\n{runs} timed round(s) after {warmup} warm-up, order: {order}", flush=True)
    for n in range(warmup):
        run_round(peers, n, record=False)
    every = max(1, runs // 10)
    for n in range(runs):
        shown = run_round(peers, warmup + n, record=True)
        if (n + 1) % every == 0 or n + 1 == runs:
            cells = "  ".join(f"{name} {ms(s)} ms" for name, s in shown.items())
            print(f"  run {n + 1:>4}/{runs}  {cells}", flush=True)


def profile(ours: Ours, cycles: int = PROFILE_CYCLES) -> None:
    """cProfile of `cycles` create/start/wait/remove cycles, top PROFILE_TOP by cumulative."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(lambda: [ours.once(10_000 + i) for i in range(cycles)])
    print(f"\nprofile of ours, {cycles} create/start/wait/remove cycles in-process:")
    stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats("cumulative")
    stats.print_stats(PROFILE_TOP)


# --------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.1f}"


def summary(values: list[float]) -> tuple[float, float, float]:
    """Median, p90 and min."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    p90 = statistics.quantiles(values, n=10, method="inclusive")[8]
    return statistics.median(values), p90, min(values)


def row(label: str, values: list[float] | None) -> None:
    if not values:
        print(f"{label:<34} {'-':>7} {'-':>7} {'-':>7} {0:>5}")
        return
    med, p90, low = summary(values)
    print(f"{label:<34} {ms(med):>7} {ms(p90):>7} {ms(low):>7} {len(values):>5}")


def print_table(ours: Ours, runc: Runc | None) -> None:
    print(f"\n{'ms':<34} {'median':>7} {'p90':>7} {'min':>7} {'runs':>5}")
    row("ours  create → exit", ours.samples.get("exit"))
    row("ours  incl. remove", ours.samples.get("total"))
    for step in STEPS:
        row(f"        {step}", ours.samples.get(step))
    row("runc  run (create → exit → delete)", runc.samples.get("run") if runc else None)
    for peer in (ours, runc):
        if peer and peer.error:
            print(f"{peer.name}: {peer.error.splitlines()[0]}")
    print(f"\nthe issue measured: {ISSUE_REFERENCE}; goal: ours / runc <= {GOAL:.1f}x")
    peer = runc.samples.get("run") if runc else None
    print_ratio("ours create → exit / runc", ours.samples.get("exit"), peer)
    print_ratio("ours incl. remove / runc", ours.samples.get("total"), peer)


def print_ratio(label: str, ours: list[float] | None, peer: list[float] | None) -> None:
    if not ours or not peer:
        print(f"{label:<28} n/a (goal <= {GOAL:.1f}x: not measured)")
        return
    ratio = statistics.median(ours) / statistics.median(peer)
    verdict = "met" if ratio <= GOAL else "NOT met"
    print(f"{label:<28} {ratio:5.2f}x  (goal <= {GOAL:.1f}x: {verdict})")


def git_revision() -> str:
    rev = run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]).stdout.strip()
    dirty = run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"])
    return f"{rev or '?'}{' + uncommitted changes' if dirty.stdout.strip() else ''}"


def print_machine(workdir: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    print(f"machine: {cpus} cpus (nproc), {platform.system()} {platform.release()}, ", end="")
    print(f"Python {platform.python_version()}; git {git_revision()}")
    print(f"workdir: {workdir} on {filesystem_of(workdir)}")


def print_process_heap() -> None:
    """How big this process is: each start of ours forks it twice, at a cost that grows
    with its size; a test kit module loaded here would bill ours for what the agent never
    loads (benchkit keeps it out)."""
    gc.collect()
    started = time.perf_counter()
    gc.collect()
    took = time.perf_counter() - started
    objects = len(gc.get_objects())
    print(f"this process: {objects} gc-tracked objects, gc.collect() {ms(took).strip()} ms")
    kit = [name for name in TEST_KIT if name in sys.modules]
    if kit:
        print(f"  WARNING: {', '.join(kit)} loaded here: every fork of ours pays for them")


# --------------------------------------------------------------------------- leftovers


def leftovers(workdir: Path, ours: Ours, runc: Runc | None) -> dict[str, list[str]]:
    """Mounts, cgroups, processes and runc state the runs left behind (there should be none)."""
    cgroups = our_cgroups(ours) + (runc_cgroups(runc) if runc else [])
    processes = stray_processes(workdir, ours, cgroups)
    return {
        "mounts": [line for line in mountinfo() if str(workdir) in line],
        "cgroups": cgroups,
        "processes": [p for p in processes if not p.endswith(ZOMBIE_OF_INIT)],
        "runc containers": runc.listed() if runc else [],
        ZOMBIES: [p for p in processes if p.endswith(ZOMBIE_OF_INIT)],
    }


def our_cgroups(ours: Ours) -> list[str]:
    ids = set(ours.ids)
    found = glob.glob(str(CGROUP_ROOT / "*" / OUR_CGROUP_PARENT / "*"))
    return [p for p in found if Path(p).name in ids]


def runc_cgroups(runc: Runc) -> list[str]:
    """runc's cgroups (at /<id>, or below this process's own cgroup, in each hierarchy)."""
    found = set(glob.glob(str(CGROUP_ROOT / "*" / f"{runc.prefix}*")))
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        own = line.split(":", 2)[2].strip("/")
        if own:
            found |= set(glob.glob(str(CGROUP_ROOT / "*" / own / f"{runc.prefix}*")))
    return sorted(found)


def stray_processes(workdir: Path, ours: Ours, cgroups: Sequence[str] = ()) -> list[str]:
    """Our containers and shims (by pid and start time), other forks of this process, processes
    in `cgroups` (runc's `runc init`), anything naming the workdir; zombies included."""
    me, mine = os.getpid(), cmdline(os.getpid())
    known = dict(ours.processes)
    jailed = {int(p) for d in cgroups for p in read_or_empty(Path(d) / "cgroup.procs").split()}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid, line = int(entry.name), cmdline(int(entry.name))
        same = pid in known and process_start_time(pid) == known[pid]
        if same or pid in jailed or line == mine or str(workdir).encode() in line:
            shown = line.replace(b"\0", b" ").decode(errors="replace").strip()
            found.append(f"{pid} {shown or '(exited)'} [{process_state(pid)}]")
    return found


def process_state(pid: int) -> str:
    """State letter and parent, e.g. "Z ppid 1" (fields 3 and 4 of /proc/<pid>/stat)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return "gone"
    state, ppid = data[data.rindex(b")") + 2 :].split()[:2]
    return f"{state.decode()} ppid {int(ppid)}"


def print_leftovers(found: dict[str, list[str]]) -> None:
    """Counts, then up to 10 of each kind; exited shims that pid 1 has yet to reap are only
    counted (this host's init reaps late; they are gone a moment later)."""
    counts = ", ".join(f"{kind}: {len(items)}" for kind, items in found.items())
    print(f"\nleft behind after the runs: {counts}")
    for kind, items in found.items():
        for item in items[:10] if kind != ZOMBIES else ():
            print(f"  {kind}: {item}")


# --------------------------------------------------------------------------- main


@contextmanager
def cgroup_parents_restored() -> Iterator[None]:
    """Remove our runtime's cgroup parents (<hierarchy>/vmctl) if they were not there before."""
    pattern = str(CGROUP_ROOT / "*" / OUR_CGROUP_PARENT)
    existing = set(glob.glob(pattern))
    try:
        yield
    finally:
        for path in set(glob.glob(pattern)) - existing:
            with suppress(OSError):  # in use by someone else: leave it
                os.rmdir(path)


def clean_up(ours: Ours | None, runc: Runc | None, workdir: Path) -> None:
    """Remove every container of both peers, end stray processes, delete the workdir."""
    if ours:
        ours.remove_all()
    if runc:
        for container_id in runc.listed():
            runc.delete(container_id)
    if ours:
        for item in stray_processes(workdir, ours):  # ours and runc's, identified by pid
            if not item.endswith(ZOMBIE_OF_INIT):
                with suppress(OSError):
                    os.kill(int(item.split()[0]), signal.SIGKILL)
    remove_tree(workdir)


def bench(args: argparse.Namespace, workdir: Path) -> None:
    print_machine(workdir)
    ref = prepare_image(workdir)
    print(f"image {ref}, pulled into our store by a child process (registry stopped)")
    ours: Ours | None = None
    runc: Runc | None = None
    try:
        ours = Ours(workdir / "data", ref)
        print_process_heap()
        print(f"ours: {ours.version}; cgroups v{ours.runtime.cgroups.version}")
        print_namespaces(ours)
        runc = start_runc(workdir, ours)
        run_all([p for p in (ours, runc) if p], args.runs, args.warmup)
        print_table(ours, runc)
        if args.profile and not ours.error:
            profile(ours)
        print_leftovers(leftovers(workdir, ours, runc))
    finally:
        clean_up(ours, runc, workdir)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="timed runs per peer (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument(
        "--profile", action="store_true", help=f"then cProfile {PROFILE_CYCLES} cycles of ours"
    )
    parser.add_argument("--workdir", default=None, help="where the temp dir goes (default /tmp)")
    parser.add_argument("--prepare", default=None, help=argparse.SUPPRESS)  # the image child
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare:
        return prepare_main(Path(args.prepare))
    if os.geteuid() != 0:
        print("run as root: containers need it", file=sys.stderr)
        return 1
    return in_workdir(args.workdir, functools.partial(bench, args), cgroup_parents_restored())


if __name__ == "__main__":
    sys.exit(main())
