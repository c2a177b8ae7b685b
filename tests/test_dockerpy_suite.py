"""docker-py's own integration suite against the engine: every test not on the expected-failure
list (tests/dockerpy/expected_failures.txt, each with its reason) must pass.

Some of the suite's tests race the engine themselves (logs read right after a start without a
wait, a commit right after a start): one that fails is run once more on its own, and a pass
then is reported as such, not failed on. A failure that holds on the second run fails.

Tests on the list that now pass are reported, not failed on: networks, volumes and build are
being added in parallel, and each of them makes more pass (then delete their lines).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import dockerpy_suite as suite
import pytest
from netkit import LoopbackRelay, NetnsAgent
from registry import Registry

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the engine needs root (CI is root)"),
]
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> suite.Outcomes:
    folder = suite.find_suite(REPO)
    before = sorted(p.name for p in folder.iterdir())
    workdir = tmp_path_factory.mktemp("dockerpy")
    with Registry(tmp_path_factory.mktemp("dockerpy-registry")) as registry:  # its own names
        suite.push_stand_ins(registry)
        server = NetnsAgent(workdir, registry)  # networks need a namespace of the test's own
        relay = LoopbackRelay(server.pid, registry.port)  # the mirror, reached from inside
        try:
            junit = suite.run_suite(folder, server.url, workdir)
            if not junit.exists():
                pytest.fail(
                    f"docker-py's suite did not run:\n{(workdir / 'suite.log').read_text()}"
                )
            first = suite.read_junit(junit)
            expected = suite.expected_failures()
            again = tuple(sorted(t for t in first.failed if t not in expected))
            if again:
                second = suite.read_junit(suite.run_suite(folder, server.url, workdir, again))
        finally:
            relay.close()
            try:
                server.stop()
            finally:
                server.end_holder()  # its namespaces, with every bridge and rule, gone
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written beside it
    if not again:
        return first
    racy = sorted(second.passed & set(again))
    if racy:
        warnings.warn(f"failed, then passed on their own: {', '.join(racy)}", stacklevel=1)
    failed = {t: why for t, why in first.failed.items() if t not in racy}
    return suite.Outcomes(first.passed | frozenset(racy), failed, first.skipped)


def test_every_failure_is_an_expected_one(outcomes, request):
    expected = suite.expected_failures()
    request.config.stash[suite.SUMMARY] = suite.summary(outcomes, expected)
    now_passing = sorted(set(expected) & outcomes.passed)
    if now_passing:
        warnings.warn(
            "expected to fail but now pass (delete their lines from expected_failures.txt): "
            + ", ".join(now_passing),
            stacklevel=1,
        )
    unexpected = {t: why for t, why in outcomes.failed.items() if t not in expected}
    assert not unexpected, "\n".join(f"{t}: {why}" for t, why in sorted(unexpected.items()))


def test_the_expected_failure_list_names_real_tests_with_reasons(outcomes):
    expected = suite.expected_failures()
    ran = outcomes.passed | set(outcomes.failed) | outcomes.skipped
    assert sorted(set(expected) - ran) == []
    assert [t for t, why in expected.items() if not why] == []
