"""A realistic compose project of our own, written into a test's directory: a web (busybox
httpd, its port published), an API, a worker and a store, each image built by compose itself
from a Dockerfile on `busybox`, with HEALTHCHECKs that the `depends_on` conditions wait on,
service DNS between them, named volumes for what must survive `down`, and the web's pages
bound from the project's folder, edited on the host while it serves them.

A visit to the web's /cgi-bin/visit goes web -> api -> store by service name; the store
appends it to its volume and answers how many it holds. Each worker, on start, registers its
hostname with the store the same way, so a scale shows in the store.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

# httpd as PID 1 would ignore SIGTERM (no handler): stop and down would wait out the grace
SERVE = 'CMD ["sh", "-c", "trap \'exit 0\' TERM; httpd -f -p {} -h /www & wait"]\n'
CGI_HEAD = "printf 'Content-Type: text/plain\\r\\n\\r\\n'\n"
API_HEALTH = (
    "wget -q -O /dev/null http://store:8000/ && wget -q -O /dev/null http://127.0.0.1:8080/"
)
HEALTH = "HEALTHCHECK --interval=1s --timeout=10s --retries=60 CMD {}\n"

STORE = {
    "Dockerfile": (
        "FROM busybox\n"
        "COPY put get /www/cgi-bin/\n"
        "RUN chmod 755 /www/cgi-bin/put /www/cgi-bin/get && echo store > /www/index.html\n"
        + HEALTH.format("wget -q -O /dev/null http://127.0.0.1:8000/")
        + SERVE.format(8000)
    ),
    # QUERY_STRING is key=value: the value appended as a line to /data/key, its count answered
    "put": (
        "#!/bin/sh\nkey=${QUERY_STRING%%=*}\n"
        'echo "${QUERY_STRING#*=}" >> "/data/$key"\n' + CGI_HEAD + 'wc -l < "/data/$key"\n'
    ),
    "get": "#!/bin/sh\n" + CGI_HEAD + 'cat "/data/$QUERY_STRING"\n',
}
API = {
    "Dockerfile": (
        "FROM busybox\n"
        "COPY visit /www/cgi-bin/\n"
        "RUN chmod 755 /www/cgi-bin/visit && echo api > /www/index.html\n"
        + HEALTH.format(API_HEALTH)
        + SERVE.format(8080)
    ),
    "visit": "#!/bin/sh\n" + CGI_HEAD + 'wget -qO- "http://store:8000/cgi-bin/put?visits=web"\n',
}
WEB = {
    "Dockerfile": (
        "FROM busybox\n"
        "COPY index.html /www/\nCOPY visit /www/cgi-bin/\n"
        "RUN chmod 755 /www/cgi-bin/visit\n"
        + HEALTH.format("wget -q -O /dev/null http://127.0.0.1:80/")
        + SERVE.format(80)
    ),
    "index.html": "welcome to the shop\n",
    "visit": (
        "#!/bin/sh\necho visit >> /logs/access\n"
        + CGI_HEAD
        + 'echo "visits: $(wget -qO- http://api:8080/cgi-bin/visit)"\n'
    ),
}
WORKER = {
    "Dockerfile": 'FROM busybox\nCOPY work /work\nRUN chmod 755 /work\nCMD ["/work"]\n',
    "work": (
        "#!/bin/sh\n"
        "trap 'echo \"worker $(hostname) stopping\"; exit 0' TERM\n"
        'n=$(wget -qO- "http://store:8000/cgi-bin/put?workers=$(hostname)")\n'
        'echo "worker $(hostname) registered: $n"\n'
        "sleep 3600 &\nwait\n"
    ),
}
SERVICES = {"store": STORE, "api": API, "web": WEB, "worker": WORKER}


def compose_file(port: int) -> dict:
    """The project: the web on host port `port`; each service waits for those it needs to be
    healthy."""
    healthy = {"condition": "service_healthy"}
    return {
        "services": {
            "store": {"build": "store", "volumes": ["storedata:/data"]},
            "api": {"build": "api", "depends_on": {"store": healthy}},
            "web": {
                "build": "web",
                "ports": [f"{port}:80"],
                "volumes": ["weblogs:/logs", "./web/pages:/www/pages:ro"],
                "depends_on": {"api": healthy},
            },
            "worker": {"build": "worker", "depends_on": {"store": healthy, "api": healthy}},
        },
        "volumes": {"storedata": {}, "weblogs": {}},
    }


def write_project(root: Path, port: int) -> Path:
    """The project's files under `root` (compose.yaml is JSON, which YAML reads as is)."""
    for service, files in SERVICES.items():
        (root / service).mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (root / service / name).write_text(text)
    (root / "web" / "pages").mkdir(exist_ok=True)
    (root / "web" / "pages" / "hello.html").write_text("hello from the host\n")
    (root / "compose.yaml").write_text(json.dumps(compose_file(port), indent=2))
    return root


def http_get(port: int, path: str) -> str:
    """The body of GET `path` on 127.0.0.1:`port` (HTTP/1.0: the server closes when done)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0]:
        raise AssertionError(f"GET {path}: {data[:300]!r}")
    return body.decode()


def ok(done: subprocess.CompletedProcess) -> str:
    if done.returncode != 0:
        raise AssertionError(f"{done.args}: {done.stderr[-3000:]}")
    return done.stdout


class Shop:
    """The project as its user drives it: `docker compose -p NAME` in its directory, through
    `docker` (the CLI against one engine: the test's agent or a VM), and its published page
    read by `fetch(port, path)` from where the user sits."""

    def __init__(self, docker: Callable, root: Path, name: str, port: int, fetch: Callable):
        self.docker, self.name, self.port, self.fetch = docker, name, port, fetch
        self.root = write_project(root, port)

    def project(self) -> tuple[str, ...]:
        return ("compose", "--project-directory", str(self.root), "-p", self.name)

    def compose(self, *args: str) -> str:
        return ok(self.docker(*self.project(), *args))

    def page(self, path: str) -> str:
        return self.fetch(self.port, path)

    def services(self, *args: str) -> dict[str, list[dict]]:
        """`compose ps --format json` by service: each container's Name, State and Health."""
        found: dict[str, list[dict]] = {}
        for line in self.compose("ps", "--format", "json", *args).splitlines():
            row = json.loads(line)
            found.setdefault(row["Service"], []).append(row)
        return {k: sorted(v, key=lambda r: r["Name"]) for k, v in found.items()}

    def stored(self, key: str) -> list[str]:
        """The lines the store keeps under `key`, read in its container (`compose exec`)."""
        return self.compose("exec", "-T", "store", "cat", f"/data/{key}").splitlines()

    def hostnames(self, service: str) -> list[str]:
        """Its containers' hostnames: Docker's default, the id's first 12 digits."""
        return sorted(i[:12] for i in self.compose("ps", "-q", service).split())

    def leftovers(self) -> dict[str, list[str]]:
        """The project's containers, networks and volumes, as the docker CLI lists them."""
        label = f"label=com.docker.compose.project={self.name}"
        listed = {
            "containers": ("ps", "-a", "--filter", label, "--format", "{{.Names}}"),
            "networks": ("network", "ls", "--filter", label, "--format", "{{.Name}}"),
            "volumes": ("volume", "ls", "--filter", label, "--format", "{{.Name}}"),
        }
        return {k: ok(self.docker(*argv)).split() for k, argv in listed.items()}

    def remove_images(self) -> None:
        for service in SERVICES:
            self.docker("rmi", "-f", f"{self.name}-{service}")


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def walk_through(shop: Shop) -> None:
    """The user's session, step by step; each step checks what the user would see."""
    for step in (build_and_wait, visit_through_every_tier, edit_pages_on_the_host,
                 exec_logs_and_restart, stop_and_scale, down_keeps_volumes,
                 down_v_leaves_nothing):  # fmt: skip
        step(shop)


def build_and_wait(shop: Shop) -> None:
    """compose builds the four images (the classic builder), then `up -d --wait` returns
    once each service with a HEALTHCHECK is healthy, started in depends_on's order."""
    shop.compose("build")
    shop.compose("up", "-d", "--wait")
    running = shop.services()
    check(sorted(running) == ["api", "store", "web", "worker"], f"services: {running}")
    for service in ("store", "api", "web"):
        row = running[service][0]
        check((row["State"], row["Health"]) == ("running", "healthy"), f"{service}: {row}")
    check(running["worker"][0]["State"] == "running", f"worker: {running['worker']}")


def visit_through_every_tier(shop: Shop) -> None:
    """The published port from the user's side; the visit goes web -> api -> store by name."""
    check(shop.page("/") == "welcome to the shop\n", "the web's index")
    check(shop.page("/cgi-bin/visit") == "visits: 1\n", "a visit through every tier")
    check(shop.stored("visits") == ["web"], "the store's record of it")


def edit_pages_on_the_host(shop: Shop) -> None:
    """The web serves ./web/pages from the project's folder (a bind, read-only): a page
    edited and one added on the host are served as they are now, without a restart."""
    pages = shop.root / "web" / "pages"
    check(shop.page("/pages/hello.html") == "hello from the host\n", "a page from the host")
    (pages / "hello.html").write_text("edited on the host\n")
    (pages / "new.html").write_text("added on the host\n")
    edits = {"hello.html": "edited on the host\n", "new.html": "added on the host\n"}
    for path, text in edits.items():
        served = eventually(lambda path=path: shop.page(f"/pages/{path}"), text)
        check(served == text, f"/pages/{path} after the edit: {served!r}")


def eventually(read: Callable[[], str], wanted: str, bound: float = 60) -> str:
    """What `read` gives once it is `wanted`, or its last answer after `bound` seconds: a
    shared folder's cache in the VM may serve the old content for its timeout (1 s)."""
    deadline = time.monotonic() + bound
    while True:
        try:
            got = read()
        except AssertionError as e:  # not there yet: a 404
            got = str(e)
        if got == wanted or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def exec_logs_and_restart(shop: Shop) -> None:
    """The worker registered with the store on start (its log says so); a restarted api is
    healthy again and still finds, and is found by, its neighbours by name."""
    worker = shop.hostnames("worker")
    check(shop.stored("workers") == worker, f"registered: {shop.stored('workers')}")
    logs = shop.compose("logs", "--no-color", "worker")
    check(f"worker {worker[0]} registered: 1" in logs, f"worker's logs: {logs}")
    shop.compose("restart", "api")
    shop.compose("up", "-d", "--wait")
    check(shop.services()["api"][0]["Health"] == "healthy", "api after its restart")
    check(shop.page("/cgi-bin/visit") == "visits: 2\n", "a visit after the api's restart")


def stop_and_scale(shop: Shop) -> None:
    """`stop` sends the worker its SIGTERM (it says goodbye and exits 0); `--scale worker=3`
    starts it again beside two more, and each registers with the store."""
    shop.compose("stop", "worker")
    stopped = shop.services("-a")["worker"][0]
    check((stopped["State"], stopped["ExitCode"]) == ("exited", 0), f"stopped: {stopped}")
    check("stopping" in shop.compose("logs", "--no-color", "worker"), "the worker's goodbye")
    shop.compose("up", "-d", "--wait", "--scale", "worker=3")
    workers = shop.services()["worker"]
    check([w["State"] for w in workers] == ["running"] * 3, f"scaled: {workers}")
    hostnames = shop.hostnames("worker")
    check(sorted(set(shop.stored("workers"))) == hostnames, f"{shop.stored('workers')}")


def down_keeps_volumes(shop: Shop) -> None:
    """`down` takes containers and network, keeps the named volumes: the next `up` finds
    the store's data and the web's log where they were."""
    shop.compose("down")
    gone = shop.leftovers()
    check(gone["containers"] == [] and gone["networks"] == [], f"after down: {gone}")
    check(sorted(gone["volumes"]) == [f"{shop.name}_{v}" for v in ("storedata", "weblogs")],
          f"volumes after down: {gone}")  # fmt: skip
    shop.compose("up", "-d", "--wait")
    check(shop.page("/cgi-bin/visit") == "visits: 3\n", "the count outlived down")
    access = shop.compose("exec", "-T", "web", "cat", "/logs/access").split()
    check(access == ["visit"] * 3, f"the web's log: {access}")


def down_v_leaves_nothing(shop: Shop) -> None:
    """`down -v` takes the named volumes too; the user's own folder stays as it was."""
    shop.compose("down", "-v")
    gone = shop.leftovers()
    check(gone == {"containers": [], "networks": [], "volumes": []}, f"after down -v: {gone}")
    kept = sorted(p.name for p in (shop.root / "web" / "pages").iterdir())
    check(kept == ["hello.html", "new.html"], f"the project's pages after down -v: {kept}")
