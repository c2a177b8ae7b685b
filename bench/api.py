#!/usr/bin/env python3
"""API benchmark: `docker run --rm IMAGE true` and GET /containers/json, ours against dockerd.

One run, three engines, the same busybox image from one loopback registry (pulled into each
engine first, untimed), every container with `--network none` (ours has no bridge yet):

  ours     the real docker CLI (DOCKER_HOST) against `vmctl-agent serve` on a unix socket
  dockerd  the same CLI against a real dockerd (and its containerd) started for the run
  podman   `podman run --rm` (its own CLI, runc, overlay storage in the temp dir)

`docker run --rm --network none IMAGE true` alternates round-robin (ours, dockerd, podman, ...)
after `--warmup` untimed rounds. Then ~5 containers are made in ours and dockerd (some running)
and a bounded load generator sends GET /containers/json over the unix socket (`--requests`,
`--concurrency` keep-alive connections, a time cap), alternating rounds again. Last, the idle
RSS of ours (the agent; its shims apart) and of dockerd + containerd (their shims apart).

    python bench/api.py [--runs 20] [--warmup 2] [--requests 2000] [--concurrency 8] [--profile]
"""

from __future__ import annotations

import argparse
import functools
import glob
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from agentserver import push_test_images
from pull import (
    PODMAN_RUNROOT_MAX,
    RUN_DIRS,
    Docker,
    RunFailed,
    Tool,
    Unavailable,
    cmdline,
    end_pid,
    failure,
    in_workdir,
    measure_round,
    need,
    print_machine,
    run,
    run_dirs_restored,
    version,
    wait_for_server,
)
from registry import Registry

IMAGE = "library/busybox:latest"
COMMAND = ("true",)
RUN_FLAGS = ("--rm", "--network", "none")
PODMAN_RUN_FLAGS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
RUN_TIMEOUT = 60.0
LIST_PATH = "/containers/json"
FLEET_RUNNING, FLEET_EXITED = 3, 2
FLEET_PREFIX = "api-bench-"
GOAL_RUN = 0.5  # ours / dockerd, docker run --rm: under half
GOAL_RPS = 1.0  # ours / dockerd, requests per second: more
GOAL_RSS_MIB = 30.0  # the agent's idle RSS
ISSUE_REFERENCE = "dockerd 365 ms, podman 410 ms; dockerd + containerd idle 132 MiB"
# Empty /run dirs the engines make whatever their flags (containerd's shims, podman's runc);
# removed at the end if they were not there before, deepest first.
ENGINE_RUN_DIRS = ("/run/containerd/s", "/run/containerd", "/run/runc", *RUN_DIRS)
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROFILE_RUNS, PROFILE_RATE, PROFILE_TOP = 10, 250, 12
CGROUP_TREES = ("docker", "libpod_parent")  # dockerd's and podman's parents, with what's below
CGROUP_PARENTS = ("vmctl",)  # ours: only the parent (other agents on this host share it)


# --------------------------------------------------------------------------- processes


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def pids_where(match) -> list[int]:
    """Pids whose cmdline satisfies `match`, this process excluded."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and match(cmdline(int(entry.name))):
            found.append(int(entry.name))
    return sorted(found)


def children_of(parent: int) -> list[int]:
    """Pids whose parent is `parent` (field 4 of /proc/<pid>/stat)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            data = (entry / "stat").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if data and int(data[data.rindex(b")") + 2 :].split()[1]) == parent:
            found.append(int(entry.name))
    return sorted(found)


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB; (0, 0) if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    return field_kib(status, "VmRSS:"), field_kib(rollup, "Pss:")


def field_kib(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


@dataclass
class Memory:
    """Summed RSS and PSS of a set of processes."""

    count: int = 0
    rss_kib: int = 0
    pss_kib: int = 0

    @classmethod
    def of(cls, pids: list[int]) -> Memory:
        sizes = [memory_kib(pid) for pid in pids]
        alive = [s for s in sizes if s[0]]
        return cls(len(alive), sum(s[0] for s in alive), sum(s[1] for s in alive))


# --------------------------------------------------------------------------- the engines


class DockerApi:
    """What ours and dockerd share: the docker CLI on a unix socket, a fleet, their processes."""

    name: str
    ref: str
    cli: str
    sock: str
    env: dict[str, str]

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([self.cli, "-H", self.sock, *args], env=self.env, timeout=RUN_TIMEOUT)

    @property
    def socket_path(self) -> str:
        return self.sock.removeprefix("unix://")

    def pull_image(self) -> None:
        check(f"{self.name}: docker pull", self.docker("pull", self.ref))

    def run_argv(self) -> list[str]:
        return [self.cli, "-H", self.sock, "run", *RUN_FLAGS, self.ref, *COMMAND]

    def containers(self) -> list[str]:
        return self.docker("ps", "-aq").stdout.split()

    def make_fleet(self) -> None:
        """FLEET_RUNNING `sleep` containers and FLEET_EXITED exited ones."""
        for n in range(FLEET_RUNNING + FLEET_EXITED):
            detach = ("-d",) if n < FLEET_RUNNING else ()
            cmd = ("sleep", "3600") if n < FLEET_RUNNING else COMMAND
            name = f"{FLEET_PREFIX}{n}"
            args = ("run", *detach, "--network", "none", "--name", name, self.ref, *cmd)
            check(f"{self.name}: docker run {name}", self.docker(*args))

    def remove_containers(self) -> None:
        with suppress(subprocess.SubprocessError):  # a hung daemon: stop() ends it anyway
            for container in self.containers():
                self.docker("rm", "-f", container)

    def daemons(self) -> list[int]:
        raise NotImplementedError

    def shims(self) -> list[int]:
        raise NotImplementedError


class Ours(DockerApi, Tool):
    """`vmctl-agent serve` (the console script beside this python) on a socket in the temp dir,
    with the loopback registry as its docker.io mirror."""

    mirror = ""
    proc: subprocess.Popen[bytes] | None = None
    command = b""  # the agent's cmdline, which its forked shims keep

    def start(self) -> None:
        self.cli = need("docker")
        agent = Path(sys.executable).with_name("vmctl-agent")
        if not agent.is_file():
            raise Unavailable(f"{agent} is missing: pip install -e . in the venv")
        self.scratch.mkdir(parents=True)
        self.sock = f"unix://{self.scratch / 'docker.sock'}"
        self.env = {**os.environ, "DOCKER_CONFIG": str(self.scratch / "cli")}
        self.log = self.scratch / "agent.log"
        root = str(self.scratch / "data")
        argv = [str(agent), "serve", "--listen", self.sock, "--data-root", root]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*argv, "--registry-mirror", self.mirror],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.wait_ready()
        self.command = cmdline(self.proc.pid)
        agent_version = version([str(agent), "--version"])
        self.version = f"{agent_version} (console script); API {self.api_version}"

    def wait_ready(self) -> None:
        assert self.proc is not None
        self.api_version = wait_for_server(
            self.proc, self.docker, "{{.Server.APIVersion}}", "the agent", self.log_tail, 0.1
        )

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def daemons(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def shims(self) -> list[int]:
        """Forked copies of the agent, detached: the same cmdline, another pid."""
        if self.proc is None or not self.command:
            return []
        return [pid for pid in pids_where(self.command.__eq__) if pid != self.proc.pid]

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.remove_containers()
            shims = self.shims()
            Docker.terminate(self.proc)
            for pid in shims:
                end_pid(pid, "vmctl-agent")
        super().stop()


class Dockerd(DockerApi, Docker):
    """pull.py's dockerd (no bridge, no iptables, no ip_forward; its own containerd)."""

    def start(self) -> None:
        super().start()
        if self.proc is not None:  # pull.py reads only the main thread's children
            self.children = tuple(children_of(self.proc.pid))

    def daemons(self) -> list[int]:
        return [self.proc.pid, *self.children] if self.proc else []

    def shims(self) -> list[int]:
        """containerd-shim-runc-v2 processes of this dockerd's containerd."""
        daemons = set(self.daemons())
        inside = str(self.scratch).encode()
        return [pid for pid in pids_where(lambda c: inside in c) if pid not in daemons]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.remove_containers()
        super().stop()


class Podman(Tool):
    """`podman run --rm` with runc, overlay storage and libpod state in the temp dir."""

    def start(self) -> None:
        self.binary = need("podman")
        runroot = self.scratch / "rr"
        if len(str(runroot)) > PODMAN_RUNROOT_MAX:
            raise Unavailable(f"runroot {runroot} is over podman's 50-char limit; use --workdir")
        self.version = version([self.binary, "--version"])
        self.scratch.mkdir(parents=True)

    def podman(self, *args: str) -> list[str]:
        d = self.scratch
        return [
            self.binary,
            *("--root", str(d / "root"), "--runroot", str(d / "rr")),
            *("--tmpdir", str(d / "libpod"), "--network-config-dir", str(d / "net")),
            *("--storage-driver", "overlay", "--runtime", "runc"),
            *("--cgroup-manager", "cgroupfs", "--events-backend", "file"),  # no systemd here
            *args,
        ]

    def pull_image(self) -> None:
        argv = self.podman("pull", "--tls-verify=false", self.ref)
        check("podman pull", run(argv, timeout=RUN_TIMEOUT))

    def run_argv(self) -> list[str]:
        return self.podman("run", *RUN_FLAGS, *PODMAN_RUN_FLAGS, self.ref, *COMMAND)

    def containers(self) -> list[str]:
        return run(self.podman("ps", "-aq")).stdout.split()

    def stop(self) -> None:
        if self.scratch.exists():
            with suppress(subprocess.SubprocessError):
                run(self.podman("rm", "-af"), timeout=RUN_TIMEOUT)
                run(self.podman("system", "reset", "-f"), timeout=RUN_TIMEOUT)
        super().stop()


def check(what: str, proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        raise failure(what, proc)


ENGINES = {"ours": Ours, "dockerd": Dockerd, "podman": Podman}


def start_engines(names: list[str], ref: str, workdir: Path, mirror: str) -> list[Tool]:
    """Start each engine and pull the image into it; one that fails is reported and skipped."""
    started = []
    Ours.mirror = mirror
    for name in names:
        engine = ENGINES[name](name, ref, workdir / name)
        try:
            engine.start()
            engine.pull_image()
        except (Unavailable, RunFailed, OSError, subprocess.SubprocessError) as e:
            print(f"{name}: not available, skipped: {e}", flush=True)
            engine.stop()
            continue
        print(f"{name}: {engine.version}\n  $ {' '.join(engine.run_argv())}", flush=True)
        started.append(engine)
    return started


# --------------------------------------------------------------------------- docker run


def timed_run(engine: Tool) -> float:
    """One `run --rm ... true`, timed; RunFailed unless it exits 0."""
    env = getattr(engine, "env", None)
    started = time.perf_counter()
    try:
        proc = run(engine.run_argv(), env=env, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise RunFailed(f"timed out after {RUN_TIMEOUT:.0f} s") from e
    elapsed = time.perf_counter() - started
    check(f"{engine.name} run", proc)
    return elapsed


def run_round(engines: list[Tool], label: str, record: bool) -> None:
    """One run per live engine, in order; a failing engine is reported and dropped."""
    measure_round(
        engines,
        f"{label:<10}",
        record,
        timed=timed_run,
        show=lambda elapsed: f"{ms(elapsed)} ms",
        failed="docker run failed",
    )


def run_all(engines: list[Tool], runs: int, warmup: int) -> None:
    order = ", ".join(e.name for e in engines)
    print(f"\ndocker run: {runs} timed round(s) after {warmup} warm-up, order: {order}")
    for n in range(warmup):
        run_round(engines, f"warm-up {n + 1}", record=False)
    for n in range(runs):
        run_round(engines, f"run {n + 1}", record=True)
    left = {e.name: len(e.containers()) for e in engines if not e.error}
    print("containers left after the --rm runs: " + ", ".join(f"{k} {v}" for k, v in left.items()))


# --------------------------------------------------------------------------- GET load


class UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 (keep-alive) over a unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


@dataclass
class Load:
    """One bounded load round: latencies of the good answers, errors, wall and client CPU."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    client_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0


def get(conn: UnixConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, response.read()


def worker(path: str, tickets: Iterator[int], total: int, deadline: float, load: Load) -> None:
    """Send GETs on one connection until the tickets or the time run out."""
    conn = UnixConnection(path, timeout=10)
    try:
        while next(tickets) < total and time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                status, _ = get(conn, LIST_PATH)
            except (OSError, http.client.HTTPException) as e:
                load.errors.append(f"{type(e).__name__}: {e}")
                conn.close()
                continue
            if status == 200:
                load.latencies.append(time.perf_counter() - started)
            else:
                load.errors.append(f"HTTP {status}")
    finally:
        conn.close()


def generate_load(path: str, total: int, concurrency: int, cap: float) -> Load:
    """`total` GETs over `concurrency` connections, stopped after `cap` seconds."""
    load, tickets = Load(), itertools.count()  # next() on a count is atomic under the GIL
    deadline = time.monotonic() + cap
    args = (path, tickets, total, deadline, load)
    threads = [threading.Thread(target=worker, args=args) for _ in range(concurrency)]
    cpu, started = os.times(), time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.wall = time.perf_counter() - started
    after = os.times()
    load.client_cpu = after.user + after.system - cpu.user - cpu.system
    return load


def listed(engine: DockerApi) -> int:
    """How many containers GET /containers/json answers with (a check, untimed)."""
    conn = UnixConnection(engine.socket_path, timeout=10)
    try:
        status, body = get(conn, LIST_PATH)
    finally:
        conn.close()
    if status != 200:
        raise RunFailed(f"GET {LIST_PATH} answered {status}: {body[:200]!r}")
    return len(json.loads(body))


def prepare_load(engines: list[DockerApi]) -> list[DockerApi]:
    """Make the fleet in each engine and check what it lists; a failing engine is dropped."""
    ready = []
    for engine in engines:
        try:
            engine.make_fleet()
            count = listed(engine)
        except (RunFailed, OSError, ValueError, subprocess.SubprocessError) as e:
            print(f"  {engine.name}: FAILED, no load test: {e}", flush=True)
            continue
        print(f"  {engine.name}: GET {LIST_PATH} lists {count} containers", flush=True)
        ready.append(engine)
    return ready


def load_all(engines: list[DockerApi], args: argparse.Namespace) -> dict[str, list[Load]]:
    """A short untimed warm-up, then `--load-rounds` alternating rounds per engine."""
    made = FLEET_RUNNING + FLEET_EXITED
    print(f"\nGET {LIST_PATH}: {made} containers per engine ({FLEET_RUNNING} running)")
    engines = prepare_load(engines)
    results: dict[str, list[Load]] = {e.name: [] for e in engines}
    for engine in engines:
        generate_load(engine.socket_path, args.concurrency * 10, args.concurrency, args.load_cap)
    for n in range(args.load_rounds):
        cells = []
        for engine in engines:
            load = generate_load(engine.socket_path, args.requests, args.concurrency, args.load_cap)
            results[engine.name].append(load)
            cells.append(f"{engine.name} {load.rate:7.0f} req/s ({len(load.errors)} errors)")
        print(f"  round {n + 1:<4} " + "  ".join(cells), flush=True)
    return results


# --------------------------------------------------------------------------- memory


@dataclass
class Footprint:
    """An engine's daemons (by name) and its shims, measured apart."""

    daemons: dict[str, Memory]
    shims: Memory

    @property
    def total(self) -> Memory:
        parts = self.daemons.values()
        return Memory(len(parts), sum(m.rss_kib for m in parts), sum(m.pss_kib for m in parts))


def footprint(engine: DockerApi) -> Footprint:
    daemons = {comm(pid): Memory.of([pid]) for pid in engine.daemons()}
    return Footprint(daemons, Memory.of(engine.shims()))


# --------------------------------------------------------------------------- report


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.1f}"


def mib(kib: int) -> str:
    return f"{kib / 1024:6.1f}"


def percentile(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def print_run_table(engines: list[Tool]) -> dict[str, float]:
    """Median, p90 and min of each engine's runs, and each against dockerd's median."""
    medians = {e.name: statistics.median(e.times) for e in engines if e.times}
    base = medians.get("dockerd")
    flags = " ".join(RUN_FLAGS)
    print(f"\nrun {flags} IMAGE true, ms         median    p90    min  runs  vs dockerd")
    for e in engines:
        if not e.times:
            reason = (e.error or "").splitlines()[0] if e.error else ""
            print(f"  {e.name:<34} {'-':>6} {'-':>6} {'-':>6} {0:>5}  {reason}")
            continue
        ratio = f"{medians[e.name] / base:8.2f}x" if base else f"{'-':>9}"
        cells = f"{ms(medians[e.name])} {ms(percentile(e.times, 90))} {ms(min(e.times))}"
        print(f"  {e.name:<34} {cells} {len(e.times):>5} {ratio}")
    return medians


def print_load_table(results: dict[str, list[Load]], args: argparse.Namespace) -> dict[str, float]:
    """Median req/s over rounds, pooled p50/p99 latency, errors, client CPU, against dockerd."""
    rates = {name: statistics.median(r.rate for r in loads) for name, loads in results.items()}
    base = rates.get("dockerd")
    per = f"{args.requests} per round, concurrency {args.concurrency}, keep-alive"
    print(f"\nGET {LIST_PATH} ({per})")
    print("         req/s  p50 ms  p99 ms  errors  client CPU  vs dockerd")
    for name, loads in results.items():
        latencies = [x for r in loads for x in r.latencies]
        errors = sum(len(r.errors) for r in loads)
        busy = sum(r.client_cpu for r in loads) / sum(r.wall for r in loads)
        ratio = f"{rates[name] / base:9.2f}x" if base else f"{'-':>10}"
        p50, p99 = (ms(percentile(latencies, p)) for p in (50, 99)) if latencies else ("-", "-")
        cells = f"{rates[name]:5.0f}  {p50:>6}  {p99:>6}  {errors:>6}  {busy:9.0%}"
        print(f"  {name:<7} {cells} {ratio}")
        for error in sorted({e for r in loads for e in r.errors})[:3]:
            print(f"    error: {error}")
    return rates


def print_memory_table(prints: dict[str, Footprint], settle: float) -> None:
    """Each daemon, their sum, and the shims apart (forks share pages: see PSS)."""
    print(f"\nidle memory {settle:.0f} s after the load, with the containers still there, MiB")
    print(f"  {'engine':<8} {'processes':<22} {'n':>2} {'RSS':>6} {'PSS':>6}")
    for name, fp in prints.items():
        rows = list(fp.daemons.items())
        if len(rows) > 1:
            rows.append(("+".join(fp.daemons), fp.total))
        rows.append(("shims (apart)", fp.shims))
        for label, mem in rows:
            print(f"  {name:<8} {label:<22} {mem.count:>2} {mib(mem.rss_kib)} {mib(mem.pss_kib)}")


def print_goals(
    run_medians: dict[str, float], rates: dict[str, float], prints: dict[str, Footprint]
) -> None:
    print(f"\nthe issue measured: {ISSUE_REFERENCE}; goals:")
    run_ratio = ratio_of(run_medians, "ours", "dockerd")
    rps_ratio = ratio_of(rates, "ours", "dockerd")
    ours_rss = prints["ours"].total.rss_kib / 1024 if "ours" in prints else None
    print(goal("docker run, ours / dockerd", run_ratio, "x", f"< {GOAL_RUN}", GOAL_RUN.__gt__))
    print(goal("req/s, ours / dockerd", rps_ratio, "x", f"> {GOAL_RPS}", GOAL_RPS.__lt__))
    print(goal("idle RSS of the agent", ours_rss, " MiB", f"<= {GOAL_RSS_MIB:.0f}", rss_met))


def rss_met(value: float) -> bool:
    return value <= GOAL_RSS_MIB


def ratio_of(values: dict[str, float], a: str, b: str) -> float | None:
    return values[a] / values[b] if a in values and values.get(b) else None


def goal(
    label: str, value: float | None, unit: str, wanted: str, met: Callable[[float], bool]
) -> str:
    if value is None:
        return f"  {label:<28} {'n/a':>6}  (goal {wanted}{unit}: not measured)"
    verdict = "met" if met(value) else "NOT met"
    return f"  {label:<28} {value:6.2f}{unit}  (goal {wanted}{unit}: {verdict})"


# --------------------------------------------------------------------------- profile


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def profile_agent(ours: Ours, what: str, action: Callable[[], object]) -> None:
    """Sample the agent with py-spy while `action` runs (GIL holders only: its CPU)."""
    spy, out = py_spy(), ours.scratch / "py-spy.txt"
    if spy is None or ours.proc is None:
        print("\nprofile: py-spy is not installed (pip install py-spy)")
        return
    rate = str(PROFILE_RATE)
    argv = [spy, "record", "--pid", str(ours.proc.pid), "--gil", "--function", "--rate", rate]
    argv += ["--format", "raw", "--output", str(out)]
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            time.sleep(1.0)  # attached
            started = time.perf_counter()
            action()
            wall = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output and exits
            _, err = proc.communicate(timeout=RUN_TIMEOUT)
    if not out.is_file():
        print(f"\nprofile: py-spy failed: {err.decode(errors='replace').strip()[-500:]}")
        return
    print_profile(what, out.read_text(), wall)
    out.unlink()


def print_profile(what: str, raw: str, wall: float) -> None:
    """Top functions by own and by inclusive samples (the agent's own code for the latter)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        own[frames[-1]] += int(count)
        inclusive.update(dict.fromkeys(set(frames), int(count)))
    total = sum(own.values()) or 1
    busy = total / PROFILE_RATE
    print(f"\nprofile of the agent, {what}: {busy:.2f} s holding the GIL in {wall:.2f} s wall")
    ours_only = [(f, n) for f, n in inclusive.most_common() if "vmctl_agent/" in f]
    for title, rows in (("own", own.most_common()), ("inclusive, vmctl_agent", ours_only)):
        print(f"  {title}:")
        for frame, n in rows[:PROFILE_TOP]:
            print(f"    {n / total:6.1%}  {frame}")


def profile(ours: Ours, args: argparse.Namespace) -> None:
    """--profile: PROFILE_RUNS `docker run`s, then one load round, against ours."""
    runs = f"{PROFILE_RUNS} x docker run"
    sock, n, cap = ours.socket_path, args.requests, args.load_cap
    try:
        profile_agent(ours, runs, lambda: [timed_run(ours) for _ in range(PROFILE_RUNS)])
        load = f"{n} x GET {LIST_PATH}"
        profile_agent(ours, load, lambda: generate_load(sock, n, args.concurrency, cap))
    except RunFailed as e:
        print(f"profile: a run failed: {e}")


# --------------------------------------------------------------------------- main


def cgroup_dirs() -> set[str]:
    """Our parents, and dockerd's and podman's parents with everything below them."""
    found = set()
    for name in CGROUP_PARENTS:
        found |= set(glob.glob(str(CGROUP_ROOT / "*" / name)))
    for name in CGROUP_TREES:
        for top in glob.glob(str(CGROUP_ROOT / "*" / name)):
            found |= {dirpath for dirpath, _, _ in os.walk(top)}
    return found


@contextmanager
def cgroups_restored() -> Iterator[None]:
    """Remove the (empty) cgroup dirs the engines created, deepest first."""
    before = cgroup_dirs()
    try:
        yield
    finally:
        for path in sorted(cgroup_dirs() - before, key=len, reverse=True):
            with suppress(OSError):  # still in use: leave it
                os.rmdir(path)


def bench(args: argparse.Namespace, workdir: Path) -> None:
    print_machine()
    registry = Registry(workdir / "registry")
    engines: list[Tool] = []
    try:
        push_test_images(registry)
        ref = f"{registry.host}/{IMAGE}"
        print(f"pushed {ref}; every run with --network none (ours has no bridge yet)\n")
        engines = start_engines(args.only, ref, workdir, registry.url)
        if not engines:
            print("no engines to run")
            return
        run_all(engines, args.runs, args.warmup)
        run_medians = print_run_table(engines)
        apis = [e for e in engines if isinstance(e, DockerApi) and not e.error]
        results = load_all(apis, args) if apis else {}
        time.sleep(args.settle)
        prints = {e.name: footprint(e) for e in apis}
        rates = print_load_table(results, args) if results else {}
        print_memory_table(prints, args.settle)
        print_goals(run_medians, rates, prints)
        ours = [e for e in apis if isinstance(e, Ours)]
        if args.profile and ours:
            profile(ours[0], args)
    finally:
        for engine in engines:
            engine.stop()
        registry.stop()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per engine (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument("--requests", type=int, default=2000, help="GETs per load round")
    parser.add_argument("--concurrency", type=int, default=8, help="connections (default 8)")
    parser.add_argument("--load-rounds", type=int, default=3, help="load rounds per engine")
    parser.add_argument("--load-cap", type=float, default=30.0, help="seconds a round may take")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before RSS")
    parser.add_argument(
        "--profile", action="store_true", help="then py-spy the agent: docker runs, one load round"
    )
    parser.add_argument("--only", default=",".join(ENGINES), help="comma-separated engines")
    parser.add_argument("--workdir", default=None, help="where the temp dir goes (default /tmp)")
    args = parser.parse_args(argv)
    only = {t.strip() for t in args.only.split(",") if t.strip()}
    if only - set(ENGINES):
        parser.error(f"unknown engines {sorted(only - set(ENGINES))}; choose from {list(ENGINES)}")
    args.only = [name for name in ENGINES if name in only]  # a fixed round-robin order
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("run as root: dockerd, podman and containers need it", file=sys.stderr)
        return 1
    return in_workdir(
        args.workdir,
        functools.partial(bench, args),
        run_dirs_restored(ENGINE_RUN_DIRS),
        cgroups_restored(),
    )


if __name__ == "__main__":
    sys.exit(main())
