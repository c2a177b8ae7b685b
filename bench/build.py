#!/usr/bin/env python3
"""Build benchmark: the classic builder (`DOCKER_BUILDKIT=0 docker build`), ours against
Debian's dockerd, on the issue's reference project.

The project: two stages, a context of `--files` files (2,000 by default, small source-like
text in nested directories), four RUN steps that write files. Both engines get busybox from
one loopback registry first (untimed). Each round times, per engine in turn:

  cold     `docker build --no-cache` (every step runs; the base image is local)
  cached   the same build again: every step from the cache
  edit     one source file changed, then built: the steps from its COPY on run again
  push     `docker push` of a ~100 MB, five-layer image (pull.py's bench image, pulled by both
           engines from the loopback registry first) to a fresh loopback registry each time,
           so every layer is uploaded (no blob there yet, none to mount)

    python bench/build.py [--runs 3] [--files 2000] [--push-mb 100] [--workdir DIR]

Goals (the issue's): cold <= 1.0x dockerd, cached <= 0.5x, edit <= 1.0x, push <= 1.0x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentserver import serving
from benchkit import in_workdir
from pull import Docker, RunFailed, build_bench_image, print_machine, run_dirs_restored
from registry import Registry

DOCKERFILE = """\
FROM busybox AS deps
COPY src/lib /deps
RUN find /deps -type f | sort > /deps.list
RUN mkdir -p /out && cp -r /deps /out/deps && wc -l /deps.list > /out/count
FROM busybox
COPY --from=deps /out /opt/deps
COPY src/app /app
RUN ls -lR /app > /app.index
RUN du -s /app /opt/deps > /sizes
CMD ["cat", "/sizes"]
"""
SCENARIOS = ("cold", "cached", "edit", "push")
GOALS = {"cold": 1.0, "cached": 0.5, "edit": 1.0, "push": 1.0}
PUSH_SOURCE = "bench/push:src"


def make_project(root: Path, files: int) -> Path:
    """`files` text files, half under src/lib and half under src/app, 50 per directory."""
    (root / "Dockerfile").parent.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(DOCKERFILE)
    for n in range(files):
        part = "lib" if n % 2 else "app"
        path = root / "src" / part / f"pkg{n // 100}" / f"module{n}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# module {n}\n" + f"def f(x):\n    return x + {n}\n" * 8)
    return root


def edit_one(project: Path, round_: int) -> None:
    path = project / "src" / "app" / "pkg0" / "module0.py"
    path.write_text(path.read_text() + f"# edit {round_}\n")


def timed_build(socket: str, project: Path, extra: tuple[str, ...] = ()) -> float:
    env = {**os.environ, "DOCKER_BUILDKIT": "0", "DOCKER_HOST": socket}
    argv = ["docker", "build", "-q", *extra, "-t", "bench-build", str(project)]
    start = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RunFailed(f"{' '.join(argv)}: {result.stderr.strip()[-400:]}")
    return elapsed


def bench(workdir: Path, runs: int, files: int, push_mb: int) -> None:
    print_machine()
    project = make_project(workdir / "project", files)
    (workdir / "ours").mkdir()
    (workdir / "registry").mkdir()
    with Registry(workdir / "registry") as registry, serving(workdir / "ours", registry) as ours:
        registry.client().push_image(*PUSH_SOURCE.split(":"), build_bench_image(push_mb, 4))
        dockerd = start_dockerd(workdir, registry)
        try:
            engines = {"ours": ours.url, "dockerd": dockerd.sock}
            source = f"{registry.host}/{PUSH_SOURCE}"
            for socket in engines.values():
                docker_cli(socket, "pull", source)
            times = rounds(engines, project, runs)
            pushes(engines, source, workdir, runs, times)
        finally:
            dockerd.stop()
    report(times)


def docker_cli(socket: str, *args: str) -> str:
    env = {**os.environ, "DOCKER_HOST": socket}
    result = subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        raise RunFailed(f"docker {' '.join(args)}: {result.stderr.strip()[-400:]}")
    return result.stdout


def pushes(engines: dict[str, str], source: str, workdir: Path, runs: int, times: dict) -> None:
    """Each push to a registry of its own, started (untimed) for it: nothing is there yet."""
    for n in range(runs):
        for name, socket in engines.items():
            target_dir = workdir / f"target-{name}-{n}"
            target_dir.mkdir()
            with Registry(target_dir) as target:
                ref = f"{target.host}/bench/pushed:r{n}"
                docker_cli(socket, "tag", source, ref)
                start = time.monotonic()
                docker_cli(socket, "push", ref)
                times[name, "push"].append(time.monotonic() - start)
                docker_cli(socket, "rmi", ref)
        cells = " ".join(f"{e} {times[e, 'push'][-1]:.2f}s" for e in engines)
        print(f"  push {n + 1}: {cells}", flush=True)


def start_dockerd(workdir: Path, registry) -> Docker:
    ref = f"{registry.url.removeprefix('http://')}/library/busybox:latest"
    dockerd = Docker("dockerd", ref, workdir / "dockerd")
    dockerd.start()
    for args in (("pull", ref), ("tag", ref, "busybox:latest")):
        if dockerd.docker(*args).returncode != 0:
            raise RunFailed(f"dockerd could not {args[0]} busybox")
    print(f"dockerd: {dockerd.version}", flush=True)
    return dockerd


def rounds(engines: dict[str, str], project: Path, runs: int) -> dict:
    times = {(e, s): [] for e in engines for s in SCENARIOS}  # push: pushes() adds its own
    for name, socket in engines.items():  # warm-up: the base pulled, caches filled
        timed_build(socket, project, ("--pull",) if name == "ours" else ())
    for n in range(runs):
        cells = []
        for name, socket in engines.items():
            times[name, "cold"].append(timed_build(socket, project, ("--no-cache",)))
            times[name, "cached"].append(timed_build(socket, project))
        edit_one(project, n)
        for name, socket in engines.items():
            times[name, "edit"].append(timed_build(socket, project))
        for scenario in SCENARIOS[:3]:
            cells.append(
                scenario + " " + " ".join(f"{e} {times[e, scenario][-1]:.2f}s" for e in engines)
            )
        print(f"  round {n + 1}: " + " | ".join(cells), flush=True)
    return times


def report(times: dict) -> None:
    print(f"\n{'scenario':<8} {'ours s':>8} {'dockerd s':>10} {'ratio':>7}  goal")
    for scenario in SCENARIOS:
        ours = statistics.median(times["ours", scenario])
        theirs = statistics.median(times["dockerd", scenario])
        ratio, goal = ours / theirs, GOALS[scenario]
        verdict = "met" if ratio <= goal else "NOT met"
        print(f"{scenario:<8} {ours:8.2f} {theirs:10.2f} {ratio:6.2f}x  <= {goal:.1f}x {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--push-mb", type=int, default=100, help="the pushed image's size")
    parser.add_argument("--workdir", default=None, help="where the temp dir goes")
    args = parser.parse_args()
    # The agent is started as `vmctl-agent`, the console script beside this python.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    if os.geteuid() != 0:
        print("the engines need root", file=sys.stderr)
        return 1
    work = lambda w: bench(w, args.runs, args.files, args.push_mb)  # noqa: E731
    return in_workdir(args.workdir, work, run_dirs_restored())


if __name__ == "__main__":
    sys.exit(main())
