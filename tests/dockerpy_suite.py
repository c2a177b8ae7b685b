"""docker-py's own integration suite (../shared/conformance/docker-py) run against the engine:
the stand-in images it pulls, the run itself, and its outcomes read back from JUnit XML.

The suite's files are read-only and unmodified; what it needs is built here: busybox-based
stand-ins for `alpine:3.10`, `alpine:latest`, `busybox:latest` and `hello-world:latest` (each
with its own image ID: tests compare IDs across names) pushed to a loopback registry the agent
uses as its mirror, HOME a scratch folder, and a time limit per test (dockerpy/timelimit.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import imagekit as ik
import pytest

HERE = Path(__file__).parent
EXPECTED_FAILURES = HERE / "dockerpy" / "expected_failures.txt"
SUITE_ENV = "VMCTL_DOCKERPY_SUITE"
OUT_OF_SCOPE_FILES = (
    "api_swarm_test.py", "api_service_test.py", "api_secret_test.py", "api_config_test.py",
    "api_plugin_test.py", "models_swarm_test.py", "models_services_test.py",
    "models_nodes_test.py", "credentials",
)  # fmt: skip
OUT_OF_SCOPE_TESTS = ("attachable", "ingress", "scope")  # the network tests that start a swarm
ALPINE_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\nbin:x:1:1:bin:/bin:/sbin/nologin\n"
    "daemon:x:2:2:daemon:/sbin:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
    "postgres:x:70:70::/var/lib/postgresql:/bin/sh\n"
)
ALPINE_GROUP = (
    "root:x:0:root\nbin:x:1:root,bin,daemon\ndaemon:x:2:root,bin,daemon\n"
    "wheel:x:10:root\nnogroup:x:65533:\nnobody:x:65534:\npostgres:x:70:\n"
)
# What the run found, for the terminal's summary (conftest prints it): a pass count is not
# enough, the issue asks for the failures with their reasons in the run's own output.
SUMMARY = pytest.StashKey[list[str]]()
STAND_INS = (("alpine", "3.10"), ("alpine", "latest"), ("busybox", "latest"))


def find_suite(repo_root: Path) -> Path:
    """$VMCTL_DOCKERPY_SUITE, else `shared/conformance/docker-py` beside the clone or one of
    its parents (CI puts /work/shared beside the repository)."""
    if os.environ.get(SUITE_ENV):
        return Path(os.environ[SUITE_ENV])
    for parent in repo_root.resolve().parents:
        candidate = parent / "shared" / "conformance" / "docker-py"
        if (candidate / "tests" / "integration").is_dir():
            return candidate
    raise RuntimeError(f"docker-py's suite is not beside {repo_root}: set {SUITE_ENV}")


def stand_in_layer() -> bytes:
    """Alpine's shape from busybox: every applet, Alpine's users (postgres too), /var/opt."""
    applets = sorted(ik.busybox_applets() - {"busybox"})
    dirs = ("bin", "etc", "proc", "sys", "dev", "root", "var", "var/opt", "usr", "home")
    return ik.tar_bytes(
        [
            *(ik.directory(d) for d in dirs),
            ik.directory("tmp", mode=0o1777),
            ik.file("bin/busybox", ik.BUSYBOX.read_bytes(), mode=0o755),
            *(ik.symlink(f"bin/{a}", "busybox") for a in applets),
            ik.file("etc/passwd", ALPINE_PASSWD.encode()),
            ik.file("etc/group", ALPINE_GROUP.encode()),
        ]
    )


def push_stand_ins(registry) -> None:
    """The four images the suite pulls, as the mirror serves them for docker.io."""
    client = ik.RegistryClient(registry.url)
    layer = stand_in_layer()
    for repo, tag in STAND_INS:
        label = {"stand-in": f"{repo}:{tag}"}  # each name its own image ID
        config = {"Cmd": ["/bin/sh"], "Env": [ik.DEFAULT_PATH], "Labels": label}
        client.push_image(f"library/{repo}", tag, ik.build_image([layer], config=config))
    hello = {"Cmd": ["/bin/echo", "Hello from Docker!"], "Env": [ik.DEFAULT_PATH]}
    client.push_image("library/hello-world", "latest", ik.build_image([layer], config=hello))


def run_suite(suite: Path, docker_host: str, scratch: Path, only: tuple[str, ...] = ()) -> Path:
    """Run the suite (minus what is out of scope), or `only` these test ids, with the project's
    python; the JUnit XML."""
    home, junit = scratch / "home", scratch / ("junit-again.xml" if only else "junit.xml")
    (home / ".docker").mkdir(parents=True, exist_ok=True)
    (home / ".docker" / "config.json").write_text("{}")  # else contexts go to the suite's cwd
    env = {
        **os.environ,
        "DOCKER_HOST": docker_host,
        "HOME": str(home),
        "PYTHONPATH": str(HERE / "dockerpy"),
        "PYTHONDONTWRITEBYTECODE": "1",  # the suite's folder is read-only in CI
    }
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONFIG", "DOCKER_CONTEXT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    cmd += ["-p", "no:pytestqt", "-p", "timelimit", f"--junitxml={junit}", "-q"]
    if only:
        cmd += [f"tests/integration/{test_id}" for test_id in only]
    else:
        cmd += ["tests/integration"]
        cmd += [f"--ignore=tests/integration/{name}" for name in OUT_OF_SCOPE_FILES]
        cmd += ["-k", " and ".join(f"not {word}" for word in OUT_OF_SCOPE_TESTS)]
    with open(scratch / ("suite-again.log" if only else "suite.log"), "wb") as log:
        subprocess.run(cmd, cwd=suite, env=env, stdout=log, stderr=subprocess.STDOUT)
    return junit


@dataclass(frozen=True)
class Outcomes:
    passed: frozenset[str]
    failed: dict[str, str]  # test id -> the first line of why
    skipped: frozenset[str]

    @property
    def total(self) -> int:
        return len(self.passed) + len(self.failed) + len(self.skipped)


def read_junit(path: Path) -> Outcomes:
    """Each test case's id (`file.py::Class::test`) and how it ended."""
    passed, failed, skipped = set(), {}, set()
    for case in ET.parse(path).iter("testcase"):
        test_id = _test_id(case)
        problems = [*case.iter("failure"), *case.iter("error")]
        if problems:
            failed[test_id] = _first_line(problems[0].get("message") or "")
        elif case.find("skipped") is not None:
            skipped.add(test_id)
        else:
            passed.add(test_id)
    return Outcomes(frozenset(passed), failed, frozenset(skipped))


def _test_id(case: ET.Element) -> str:
    """`tests.integration.api_exec_test.ExecTest` -> `api_exec_test.py::ExecTest::name`."""
    parts = case.get("classname", "").split(".")
    module = next((i for i, p in enumerate(parts) if p.endswith("_test")), len(parts) - 1)
    return "::".join([f"{parts[module]}.py", *parts[module + 1 :], case.get("name", "")])


def _first_line(message: str) -> str:
    return (message.strip().splitlines() or [""])[0][:200]


def expected_failures(path: Path = EXPECTED_FAILURES) -> dict[str, str]:
    """`test id  # reason` per line; blank lines and lines starting with # are skipped."""
    expected = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            test_id, _, reason = line.partition("#")
            expected[test_id.strip()] = reason.strip()
    return expected


def summary(outcomes: Outcomes, expected: dict[str, str]) -> list[str]:
    """The count, then each failing test with the reason the expected-failure list gives."""
    passed, ran = len(outcomes.passed), len(outcomes.passed) + len(outcomes.failed)
    lines = [
        f"docker-py suite: {passed} of {ran} passed ({passed / max(ran, 1):.1%};"
        f" {len(outcomes.skipped)} skipped)"
    ]
    for test in sorted(outcomes.failed):
        lines.append(f"  failed: {test}  # {expected.get(test) or 'NOT EXPECTED'}")
    return lines
