"""Healthchecks' pure half: dockerd's checks and wording, the merge with the image's
HEALTHCHECK, and the status a run's results add up to."""

from __future__ import annotations

import pytest
from vmctl_agent.runtime import healthcheck
from vmctl_agent.runtime.healthcheck import Health, Healthcheck
from vmctl_agent.runtime.spec import InvalidSpec

MS = 10**6


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ({"Interval": MS // 2}, "Interval in Healthcheck cannot be less than 1ms"),
        ({"Timeout": -5}, "Timeout in Healthcheck cannot be less than 1ms"),
        ({"StartPeriod": 10}, "StartPeriod in Healthcheck cannot be less than 1ms"),
        ({"StartInterval": 999_999}, "StartInterval in Healthcheck cannot be less than 1ms"),
        ({"Retries": -1}, "Retries in Healthcheck cannot be negative"),
        ({"Test": ["PING", "x"]}, "unknown healthcheck type 'PING'"),
    ],
)
def test_bad_healthchecks_are_refused_in_dockers_words(asked, message):
    with pytest.raises(InvalidSpec, match=message):
        healthcheck.check_options(asked)


def test_the_run_options_override_the_images_field_by_field():
    image = {"Test": ["CMD", "true"], "Interval": 2 * 10**9, "Retries": 5}
    merged = healthcheck.merge({"Test": ["CMD-SHELL", "test -e /ok"], "Timeout": 10**9}, image)
    assert merged == Healthcheck(("/bin/sh", "-c", "test -e /ok"), 2.0, 1.0, 0.0, 5.0, 5)
    assert healthcheck.merge({}, image).command == ("true",)
    assert healthcheck.merge({"Test": ["NONE"]}, image) is None  # --no-healthcheck
    assert healthcheck.merge(None, None) is None
    defaults = healthcheck.merge({"Test": ["CMD", "x"]}, None)
    assert (defaults.interval, defaults.timeout, defaults.retries) == (30.0, 30.0, 3)


def _result(second: int, code: int) -> dict:
    return {"Start": f"2026-01-01T00:00:{second:02d}Z", "End": "", "ExitCode": code, "Output": ""}


def test_failures_in_the_start_period_do_not_count_until_a_success():
    check = Healthcheck(("x",), 1.0, 1.0, start_period=10.0, start_interval=0.5, retries=2)
    health = Health("2026-01-01T00:00:00Z")
    assert not health.add(_result(1, 1), check) and not health.add(_result(2, 1), check)
    assert (health.status, health.failing_streak) == ("starting", 0)
    assert check.wait_before_next("starting", 3.0) == 0.5
    assert health.add(_result(11, 1), check) is False and health.failing_streak == 1
    assert health.add(_result(12, 1), check) and health.status == "unhealthy"
    assert health.add(_result(13, 0), check) and health.status == "healthy"
    assert health.failing_streak == 0 and check.wait_before_next("healthy", 3.0) == 1.0
    for second in range(14, 20):
        health.add(_result(second, 0), check)
    assert len(health.log) == 5 and health.log[-1]["Start"].endswith("19Z")


def test_timeouts_read_as_go_prints_them():
    texts = [healthcheck.timeout_text(s) for s in (0.05, 1, 30, 90, 3600)]
    assert texts == ["50ms", "1s", "30s", "1m30s", "1h0m0s"]


def test_cmd_shell_runs_in_the_containers_shell_as_dockerd_runs_it():
    """Config.Shell (a Dockerfile's SHELL, or the create request's) is CMD-SHELL's shell."""
    asked = {"Test": ["CMD-SHELL", "curl -f localhost || exit 1"]}
    assert healthcheck.merge(asked, None).command == ("/bin/sh", "-c", asked["Test"][1])
    bash = healthcheck.merge(asked, None, shell=["/bin/bash", "-o", "pipefail", "-c"])
    assert bash.command == ("/bin/bash", "-o", "pipefail", "-c", asked["Test"][1])
    exec_form = healthcheck.merge({"Test": ["CMD", "true"]}, None, shell=["/bin/bash", "-c"])
    assert exec_form.command == ("true",)  # CMD runs as given, in no shell
