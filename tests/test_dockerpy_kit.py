"""The docker-py suite's kit, without running the suite: what its summary says."""

from __future__ import annotations

import dockerpy_suite as suite


def test_the_summary_gives_the_count_and_each_failure_with_its_reason():
    outcomes = suite.Outcomes(
        passed=frozenset({"a.py::A::one", "a.py::A::two", "a.py::A::three"}),
        failed={"b.py::B::links": "400 links", "b.py::B::new": "500 oops"},
        skipped=frozenset({"c.py::C::skipped"}),
    )
    expected = {"b.py::B::links": "HostConfig.Links refused (legacy)"}
    assert suite.summary(outcomes, expected) == [
        "docker-py suite: 3 of 5 passed (60.0%; 1 skipped)",
        "  failed: b.py::B::links  # HostConfig.Links refused (legacy)",
        "  failed: b.py::B::new  # NOT EXPECTED",
    ]
