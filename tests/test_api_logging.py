"""Log drivers with the real docker CLI against `vmctl-agent serve`: json-file rotated by
`--log-opt max-size/max-file` as dockerd rotates it, `docker logs` (and `docker run`'s attach)
still reading every file in order; the `none` driver; bad options in dockerd's words."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import pytest
from agentserver import inspect, ok, serving

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)")

LINES = "for i in $(seq 1 200); do echo line-$i-................................; done"


@pytest.fixture(scope="module")
def agent(tmp_path_factory, registry):
    with serving(tmp_path_factory.mktemp("agent-logging"), registry) as server:
        assert server.docker("pull", "busybox").returncode == 0
        yield server


def numbers(text: str) -> list[int]:
    return [int(line.split("-")[1]) for line in text.splitlines()]


def log_files(agent, name: str) -> list[Path]:
    directory = agent.data_root / "containers" / inspect(agent, name)["Id"]
    return sorted(directory.glob("container-json.log*"))


def test_rotation_keeps_max_file_files_of_max_size_and_logs_reads_them_in_order(agent):
    flags = ("--log-opt", "max-size=2k", "--log-opt", "max-file=100")
    out = ok(agent.docker("run", "--name", "rot", *flags, "busybox", "sh", "-c", LINES))
    assert numbers(out) == list(range(1, 201))  # attach followed through every rotation
    files = log_files(agent, "rot")
    assert len(files) > 5 and all(f.stat().st_size <= 2000 for f in files)
    assert numbers(ok(agent.docker("logs", "rot"))) == list(range(1, 201))
    assert numbers(ok(agent.docker("logs", "--tail", "3", "rot"))) == [198, 199, 200]
    assert inspect(agent, "rot")["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-size": "2k", "max-file": "100"},
    }
    ok(agent.docker("rm", "rot"))


def test_the_oldest_files_go_beyond_max_file(agent):
    flags = ("--log-opt", "max-size=2k", "--log-opt", "max-file=2")
    ok(agent.docker("run", "-d", "--name", "short", *flags, "busybox", "sh", "-c", LINES))
    ok(agent.docker("wait", "short"))
    assert [f.name for f in log_files(agent, "short")] == [
        "container-json.log",
        "container-json.log.1",
    ]
    kept = numbers(ok(agent.docker("logs", "short")))
    assert kept == list(range(kept[0], 201)) and kept[0] > 1
    ok(agent.docker("rm", "short"))


def test_the_none_driver_keeps_nothing_to_read_but_run_still_shows_output(agent):
    out = ok(
        agent.docker("run", "--name", "quiet", "--log-driver", "none", "busybox", "echo", "hi")
    )
    assert out == "hi\n"
    logs = agent.docker("logs", "quiet")
    assert logs.returncode != 0
    assert "configured logging driver does not support reading" in logs.stderr
    assert inspect(agent, "quiet")["HostConfig"]["LogConfig"] == {"Type": "none", "Config": {}}
    ok(agent.docker("rm", "quiet"))


@pytest.mark.parametrize(
    ("driver", "options", "message"),
    [
        ("json-file", {"max-size": "0"}, "max-size must be a positive number"),
        ("json-file", {"max-size": "lots"}, "invalid size: 'lots'"),
        ("json-file", {"max-size": "1k", "max-file": "0"}, "max-file cannot be less than 1"),
        ("json-file", {"speed": "1"}, "unknown log opt 'speed' for json-file log driver"),
        ("json-file", {"compress": "true"}, "log opt 'compress' is not supported by this engine"),
        ("none", {"max-size": "1k"}, "unknown log opt 'max-size' for none log driver"),
    ],
)
def test_bad_log_options_are_refused_and_nothing_is_made(agent, driver, options, message):
    client = docker.APIClient(base_url=agent.url, version="1.47")
    containers = sorted(os.listdir(agent.data_root / "containers"))
    config = docker.types.LogConfig(type=driver, config=options)
    with pytest.raises(docker.errors.APIError) as refused:
        client.create_container(
            "busybox", ["true"], host_config=client.create_host_config(log_config=config)
        )
    assert refused.value.status_code == 400 and message in refused.value.explanation
    assert sorted(os.listdir(agent.data_root / "containers")) == containers
    client.close()
