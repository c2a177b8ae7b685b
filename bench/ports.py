#!/usr/bin/env python3
"""Published ports benchmark, in a real VM (TCG here): what a user's browser or client meets
on this machine, through our host agent, against OpenSSH's `ssh -L` to the same container
through the same VM (what Lima and Colima do), side by side in one run.

  publish delay  from `docker run -d -p` returning to the first TCP connect accepted on the
                 host port (and, apart, to the first HTTP answer, which waits for httpd to
                 start in the container); median of `--runs`
  download       a `--size-mib` file from busybox httpd in one container, through the
                 published port and through `ssh -L` to the container's address in the VM
  small GETs     requests per second over `--connections` keep-alive connections to a
                 keep-alive server in the same container (the guest's python3 in the
                 container's network and pid namespaces: busybox httpd closes each connection)
  engine RSS     the agent's RSS in the guest with `--fleet` containers on 3 networks

Rounds alternate which carrier goes first (ours then ssh, ssh then ours, ...), after an
untimed warm-up of each, so the machine's noise and a cold start hit both alike. The VM is
made for the run (`vmctl start` with a loopback registry as its docker.io mirror, the busybox
test image pushed to it) and deleted at the end, with everything in it.

    python bench/ports.py [--runs 20] [--size-mib 256] [--transfers 3] [--requests 2000]
                          [--connections 8] [--fleet 20] [--driver libvirt] [--image DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT))

CACHE = Path(os.environ.get("VMCTL_TEST_CACHE", "/var/cache/vmctl-test"))
NAME = "bench-ports"
WEB = "bench-ports-web"
GOAL_DELAY_MS = 100.0
GOAL_RATIO = 1.0  # ours / ssh -L, on both throughput figures
GOAL_RSS_MIB = 40.0
PATIENCE = 300.0  # bounds a wait for something broken
HTTPD = (
    "mkdir -p /www && echo ok > /www/small && "
    "dd if=/dev/zero of=/www/big bs=1M count={size} 2>/dev/null && exec httpd -f -p 80 -h /www"
)
KEEPALIVE_SERVER = """
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\\n")
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
S(("0.0.0.0", 81), H).serve_forever()
"""


# --------------------------------------------------------------------------- the VM


@dataclass
class Rig:
    """The VM made for the run, the docker CLI on its socket and `vmctl ssh` into it."""

    home: Path
    name: str

    def docker(self, *args: str, check: bool = True) -> str:
        from vmctl import paths as vmpaths
        from vmctl import vm

        env = {**os.environ, "DOCKER_HOST": vm.docker_host(vmpaths.vm(self.name))}
        env.pop("DOCKER_CONTEXT", None)
        done = subprocess.run(["docker", *args], capture_output=True, text=True, env=env)
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def ssh_argv(self, *extra: str) -> list[str]:
        """OpenSSH to the guest with the VM's key and its pinned host key."""
        from vmctl import vm

        endpoint = vm.endpoint(self.name)
        return [
            "ssh", "-i", str(endpoint.key), "-p", str(endpoint.port),
            "-o", f"UserKnownHostsFile={vm.known_hosts(self.name)}",
            "-o", f"HostKeyAlias={vm.domain_name(self.name)}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", *extra, f"{endpoint.user}@127.0.0.1",
        ]  # fmt: skip

    def guest(self, command: str) -> str:
        done = subprocess.run([*self.ssh_argv(), command], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"in the guest: {command}: {done.stderr.strip()}")
        return done.stdout


def boot(args: argparse.Namespace, workdir: Path, registry) -> Rig:
    from vmctl import image, vm

    os.environ["VMCTL_HOME"] = str(workdir / "home")
    built = image.load(args.image) if args.image else image.build(CACHE / "images")
    mirror, host = f"http://10.0.2.2:{registry.port}", f"10.0.2.2:{registry.port}"
    began = time.monotonic()
    vm.start(NAME, image=str(built.disk), driver=args.driver, cpus=2, memory_mib=1024,
             disk_gib=8, registry_mirrors=(mirror,), insecure_registries=(host,))  # fmt: skip
    print(f"VM {NAME} ({args.driver}, accel {vm.status(NAME).accel}) started in "
          f"{time.monotonic() - began:.0f} s", flush=True)  # fmt: skip
    return Rig(workdir / "home", NAME)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"never happened: {what}")
        time.sleep(0.01)


# --------------------------------------------------------------------------- publish delay


def connects(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /small HTTP/1.0\r\n\r\n")
        try:
            return s.recv(64).startswith(b"HTTP/1.")
        except ConnectionResetError:
            return False


def publish_delay(rig: Rig) -> tuple[float, float]:
    """Seconds from `docker run -d -p` returning to a TCP connect, then to an HTTP answer."""
    port = free_port()
    cmd = HTTPD.format(size=0)
    rig.docker("run", "-d", "--name", "bench-ports-delay", "-p", f"{port}:80", "busybox", "sh",
               "-c", cmd)  # fmt: skip
    returned = time.perf_counter()
    try:
        until(lambda: connects(port), f"a connect to {port}")
        connected = time.perf_counter()
        until(lambda: answers(port), f"an answer on {port}")
        return connected - returned, time.perf_counter() - returned
    finally:
        rig.docker("rm", "-f", "bench-ports-delay")


# --------------------------------------------------------------------------- throughput


@dataclass
class Web:
    """One container serving the file (port 80) and small GETs (81); the ports to each,
    published (ours) and through `ssh -L` to its address in the VM."""

    ours: tuple[int, int]
    ssh: tuple[int, int]
    tunnel: subprocess.Popen
    server: subprocess.Popen


def serve(rig: Rig, size_mib: int) -> Web:
    ours = (free_port(), free_port())
    rig.docker("run", "-d", "--name", WEB, "-p", f"{ours[0]}:80", "-p", f"{ours[1]}:81",
               "busybox", "sh", "-c", HTTPD.format(size=size_mib))  # fmt: skip
    pid = rig.docker("inspect", "-f", "{{.State.Pid}}", WEB).strip()
    address = rig.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", WEB).strip()
    # in the container's pid namespace too: it ends when the container is removed
    command = f"sudo -n nsenter -t {pid} -n -p python3 -c {shlex.quote(KEEPALIVE_SERVER)}"
    server = subprocess.Popen([*rig.ssh_argv(), command], stdin=subprocess.DEVNULL)
    ssh = (free_port(), free_port())
    forwards = [f"-L127.0.0.1:{p}:{address}:{q}" for p, q in zip(ssh, (80, 81), strict=True)]
    tunnel = subprocess.Popen([*rig.ssh_argv("-N", *forwards)], stdin=subprocess.DEVNULL)
    web = Web(ours, ssh, tunnel, server)
    for port in (*ours, *ssh):
        until(lambda port=port: answers(port), f"an answer on {port}")
    return web


def download(port: int) -> tuple[int, float]:
    """(bytes, seconds) of GET /big."""
    began = time.perf_counter()
    total = 0
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) as s:
        s.sendall(b"GET /big HTTP/1.0\r\n\r\n")
        while chunk := s.recv(1 << 20):
            total += len(chunk)
    return total, time.perf_counter() - began


def small_gets(port: int, requests: int, connections: int) -> float:
    """Requests per second of GET / over `connections` keep-alive connections."""
    tickets = iter(range(requests))
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PATIENCE)
        while True:
            with lock:
                if next(tickets, None) is None:
                    break
            conn.request("GET", "/")
            reply = conn.getresponse()
            if reply.read() != b"ok\n":
                raise RuntimeError(f"unexpected reply {reply.status}")
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return requests / (time.perf_counter() - began)


def throughput(web: Web, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {"ours": {}, "ssh -L": {}}
    carriers = [("ours", web.ours), ("ssh -L", web.ssh)]
    for _, ports in carriers:  # untimed: the server's and each carrier's first requests
        small_gets(ports[1], args.requests // 10, args.connections)
    for n in range(args.transfers):
        for label, ports in carriers if n % 2 == 0 else carriers[::-1]:
            size, seconds = download(ports[0])
            if size < args.size_mib << 20:
                raise RuntimeError(f"{label}: only {size} bytes arrived")
            rps = small_gets(ports[1], args.requests, args.connections)
            results[label].setdefault("MiB/s", []).append(size / seconds / (1 << 20))
            results[label].setdefault("req/s", []).append(rps)
            print(f"  round {n + 1}: {label:<7} {size / seconds / (1 << 20):7.1f} MiB/s "
                  f"{rps:7.0f} req/s", flush=True)  # fmt: skip
    return results


# --------------------------------------------------------------------------- engine RSS


def fleet_rss(rig: Rig, count: int) -> tuple[int, int]:
    """(the agent's RSS, the rest of its service's processes: the shims) in KiB with `count`
    containers on 3 networks."""
    networks = [f"bench-ports-net{i}" for i in range(3)]
    for network in networks:
        rig.docker("network", "create", network)
    for i in range(count):
        rig.docker("run", "-d", "--name", f"bench-ports-c{i}", "--network", networks[i % 3],
                   "busybox", "sleep", "3600")  # fmt: skip
    main = rig.guest("systemctl show -p MainPID --value vmctl-agent.service").strip()
    procs = "/sys/fs/cgroup/system.slice/vmctl-agent.service/cgroup.procs"
    rows = rig.guest(f"for p in $(cat {procs}); do echo $p $(ps -o rss= -p $p); done").split("\n")
    rss = {int(f[0]): int(f[1]) for f in (r.split() for r in rows) if len(f) == 2}
    return rss.pop(int(main)), sum(rss.values())


# --------------------------------------------------------------------------- report


def ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms  min {min(values) * 1000:7.1f}"


def report(delays: list[tuple[float, float]], results, rss: tuple[int, int], args) -> None:
    connect = [d[0] for d in delays]
    print(f"\npublish delay, {len(delays)} runs (goal <= {GOAL_DELAY_MS:.0f} ms to a connect):")
    print(f"  run -d returned -> TCP connect  {ms(connect)}  "
          f"{verdict(statistics.median(connect) * 1000 <= GOAL_DELAY_MS)}")  # fmt: skip
    print(f"  run -d returned -> HTTP answer  {ms([d[1] for d in delays])}  (httpd's start too)")
    print(f"\nthrough the published port vs ssh -L, {args.transfers} rounds "
          f"({args.size_mib} MiB download; GETs: {args.requests} on {args.connections} "
          f"keep-alive connections):")  # fmt: skip
    for unit in ("MiB/s", "req/s"):
        ours, ssh = (statistics.median(results[p][unit]) for p in ("ours", "ssh -L"))
        print(f"  {unit:<6} ours {ours:8.1f}  ssh -L {ssh:8.1f}  ratio {ours / ssh:5.2f}x  "
              f"(goal >= {GOAL_RATIO:.1f}x: {verdict(ours / ssh >= GOAL_RATIO)})")  # fmt: skip
    agent, shims = (kib / 1024 for kib in rss)
    print(f"\nengine RSS with {args.fleet} containers on 3 networks: {agent:.1f} MiB "
          f"(goal <= {GOAL_RSS_MIB:.0f} MiB: {verdict(agent <= GOAL_RSS_MIB)}); "
          f"the other processes of its service (the shims) {shims:.1f} MiB, RSS summed: "
          "pages they share with the agent are counted in each")  # fmt: skip


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


# --------------------------------------------------------------------------- main


def bench(args: argparse.Namespace, workdir: Path) -> None:
    from agentserver import push_test_images
    from registry import Registry

    from vmctl import vm

    registry = Registry(workdir / "registry")
    try:
        push_test_images(registry)
        try:
            measure(boot(args, workdir, registry), args)
        finally:
            with contextlib.suppress(Exception):  # a VM whose start failed is deleted too
                vm.delete(NAME)
    finally:
        registry.stop()


def measure(rig: Rig, args: argparse.Namespace) -> None:
    print(f"publish delay, {args.runs} runs", flush=True)
    delays = [publish_delay(rig) for _ in range(args.runs)]
    print(f"serving {args.size_mib} MiB from a container", flush=True)
    web = serve(rig, args.size_mib)
    try:
        results = throughput(web, args)
    finally:
        for process in (web.tunnel, web.server):
            process.terminate()
            process.wait()
        rig.docker("rm", "-f", WEB)
    rss = fleet_rss(rig, args.fleet)
    report(delays, results, rss, args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="publish delays (default 20)")
    parser.add_argument("--size-mib", type=int, default=256, help="download size (default 256)")
    parser.add_argument("--transfers", type=int, default=3, help="throughput rounds (default 3)")
    parser.add_argument("--requests", type=int, default=2000, help="small GETs per round")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections")
    parser.add_argument("--fleet", type=int, default=20, help="containers for the RSS figure")
    parser.add_argument("--driver", default="libvirt", choices=("libvirt", "qemu"))
    parser.add_argument("--image", type=Path, help="a built image (default: built and cached)")
    parser.add_argument("--workdir", default=None, help="where the temp dir goes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="vmctl-bench-ports-", dir=args.workdir))
    try:
        bench(args, workdir)
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
