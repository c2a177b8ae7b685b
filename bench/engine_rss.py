#!/usr/bin/env python3
"""The engine's memory without a VM: the agent on this host, run as the guest runs it
(`/usr/bin/python3 -I -S vmctl-agent.pyz serve`) in a network namespace of its own, taken
through ports.py's phases, with its RSS read after each:

  idle        the agent started, nothing asked of it yet
  publish     `--runs` of `docker run -d -p PORT:80` (busybox httpd), answered through the
              agent's /vmctl/ports/tcp/PORT/connect (what the host agent carries), then rm -f
  traffic     one container serving a `--size-mib` download (port 80) and small GETs over
              `--connections` keep-alive connections (port 81), each through that endpoint
  fleet       `--fleet` `sleep` containers on 3 user networks: issue 13's figure (<= 40 MiB);
              with `--healthcheck`, each probed every 2 s (`true`)

    python3 bench/engine_rss.py [--runs 5] [--size-mib 64] [--transfers 2] [--requests 400]
                                [--connections 8] [--fleet 20] [--healthcheck]

As root (the engine's namespaces); every container, network and namespace goes at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT))

from memkit import guest_rss, huge_pages_allowed, memory  # noqa: E402
from ports import GOAL_RSS_MIB, HTTPD, KEEPALIVE_SERVER  # noqa: E402  (the same workload)


def show(label: str, pid: int) -> dict[str, int]:
    m = memory(pid)
    print(f"  {label:<8} RSS {m['VmRSS'] / 1024:5.1f} MiB (anon {m['RssAnon'] / 1024:5.1f}, "
          f"file {m['RssFile'] / 1024:4.1f}), PSS {m['Pss'] / 1024:5.1f} MiB, "
          f"{m['Threads']} threads; {in_the_guest(pid)}", flush=True)  # fmt: skip
    return m


def shims(pid: int) -> str:
    """The agent's children: the shims, forks of it, whose RSS counts the pages they share
    with it (and with each other) in each; PSS shares them out."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = [memory(int(child)) for child in children]
    rss, pss = (sum(m[key] for m in found) / 1024 for key in ("VmRSS", "Pss"))
    return f"its {len(found)} shims: RSS summed {rss:.1f} MiB, PSS summed {pss:.1f} MiB"


def in_the_guest(pid: int) -> str:
    """What the guest's kernel (THP always) can make of the same pages (tests/memkit.py)."""
    if not huge_pages_allowed(pid):
        return "no huge pages for it: the same in the guest"
    return f"huge pages allowed: up to {guest_rss(pid) / 1024:.1f} MiB under THP=always"


# --------------------------------------------------------------------------- the agent


def guest_like_agent(workdir: Path) -> Path:
    """A `vmctl-agent` command on PATH that runs the zipapp as the guest's unit does."""
    from vmctl import agentapp

    app = agentapp.build(workdir / "vmctl-agent.pyz")
    bindir = workdir / "bin"
    bindir.mkdir()
    wrapper = bindir / "vmctl-agent"
    wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/python3 -I -S {app} "$@"\n')
    wrapper.chmod(0o755)
    return bindir


def hijack(agent, port: int) -> socket.socket:
    """A stream to the published `port`, as the host agent opens it."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(agent.socket))
    upgrade = "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
    sock.sendall(f"POST /vmctl/ports/tcp/{port}/connect HTTP/1.1\r\nHost: d\r\n{upgrade}".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"connect to {port}: {head!r}")
    return sock


def answers(agent, port: int) -> bool:
    with hijack(agent, port) as s:
        s.sendall(b"GET /small HTTP/1.0\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.")


def until(check, what: str) -> None:
    for _ in range(30000):
        if check():
            return
        threading.Event().wait(0.01)
    raise RuntimeError(f"never happened: {what}")


# --------------------------------------------------------------------------- phases


def publish(agent, runs: int) -> None:
    for n in range(runs):
        name = f"rss-delay{n}"
        ok(agent.docker("run", "-d", "--name", name, "-p", "80", "busybox", "sh", "-c",
                        HTTPD.format(size=0)))  # fmt: skip
        port = published(agent, name, "80")
        until(lambda port=port: _quietly(answers, agent, port), f"an answer on {port}")
        ok(agent.docker("rm", "-f", name))


def published(agent, name: str, port: str) -> int:
    return int(ok(agent.docker("port", name, port)).split()[0].rsplit(":", 1)[1])


def _quietly(check, *args) -> bool:
    try:
        return check(*args)
    except OSError:
        return False


def traffic(agent, args) -> None:
    ok(agent.docker("run", "-d", "--name", "rss-web", "-p", "80", "-p", "81", "busybox", "sh",
                    "-c", HTTPD.format(size=args.size_mib)))  # fmt: skip
    pid = ok(agent.docker("inspect", "-f", "{{.State.Pid}}", "rss-web")).strip()
    server = subprocess.Popen(["nsenter", "-t", pid, "-n", "-p", "/usr/bin/python3", "-c",
                               KEEPALIVE_SERVER])  # fmt: skip
    try:
        ports = [published(agent, "rss-web", p) for p in ("80", "81")]
        for port in ports:
            until(lambda port=port: _quietly(answers, agent, port), f"an answer on {port}")
        for _ in range(args.transfers):
            download(agent, ports[0], args.size_mib << 20)
            small_gets(agent, ports[1], args.requests, args.connections)
    finally:
        ok(agent.docker("rm", "-f", "rss-web"))
        server.wait()


def download(agent, port: int, size: int) -> None:
    total = 0
    with hijack(agent, port) as s:
        s.sendall(b"GET /big HTTP/1.0\r\n\r\n")
        while chunk := s.recv(1 << 20):
            total += len(chunk)
    if total < size:
        raise RuntimeError(f"only {total} bytes arrived")


def small_gets(agent, port: int, requests: int, connections: int) -> None:
    share = [requests // connections] * connections
    threads = [threading.Thread(target=_gets, args=(agent, port, n)) for n in share]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _gets(agent, port: int, count: int) -> None:
    with hijack(agent, port) as s:
        for _ in range(count):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while not reply.endswith(b"\r\n\r\nok\n"):
                reply += s.recv(4096)


def fleet(agent, count: int, healthcheck: bool) -> None:
    networks = [f"rss-net{i}" for i in range(3)]
    for network in networks:
        ok(agent.docker("network", "create", network))
    check = ("--health-cmd", "true", "--health-interval", "2s") if healthcheck else ()
    for i in range(count):
        ok(agent.docker("run", "-d", "--name", f"rss-c{i}", "--network", networks[i % 3],
                        *check, "busybox", "sleep", "3600"))  # fmt: skip


# --------------------------------------------------------------------------- main


def ok(result) -> str:
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip())
    return result.stdout


def measure(args, workdir: Path) -> None:
    from netkit import clear, netns_agent
    from registry import Registry

    os.environ["PATH"] = f"{REPO_ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"
    bindir = guest_like_agent(workdir)
    with Registry(workdir / "registry") as registry:
        path = f"{bindir}:{os.environ['PATH']}"
        with netns_agent(workdir / "agent", registry, path=path) as agent:
            pid = agent.process.pid
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            print(f"the agent (pid {pid}): {' '.join(argv[:5])} ...", flush=True)
            show("idle", pid)
            publish(agent, args.runs)
            show("publish", pid)
            traffic(agent, args)
            show("traffic", pid)
            fleet(agent, args.fleet, args.healthcheck)
            rss = show("fleet", pid)["VmRSS"] / 1024
            guest = guest_rss(pid) / 1024
            verdict = "met" if guest <= GOAL_RSS_MIB else "NOT met"
            print(f"engine RSS with {args.fleet} containers on 3 networks: {rss:.1f} MiB here, "
                  f"{guest:.1f} MiB at most under the guest's THP=always "
                  f"(goal <= {GOAL_RSS_MIB:.0f} MiB: {verdict})")  # fmt: skip
            print(shims(pid))
            clear(agent)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="publish runs (default 5)")
    parser.add_argument("--size-mib", type=int, default=64, help="download size (default 64)")
    parser.add_argument("--transfers", type=int, default=2, help="traffic rounds (default 2)")
    parser.add_argument("--requests", type=int, default=400, help="small GETs per round")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--fleet", type=int, default=20, help="containers for the figure")
    parser.add_argument("--healthcheck", action="store_true", help="a probe every 2 s in each")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vmctl-bench-rss-") as workdir:
        measure(args, Path(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
