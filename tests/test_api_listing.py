"""The container list's cache (api/listing.py): what invalidates an answer, and how long the
Status texts in it ("Up 5 seconds") read the same."""

from __future__ import annotations

import pytest
from vmctl_agent.api.listing import MAX_AGE, MAX_ENTRIES, ListCache, _ago, status_text
from vmctl_agent.runtime.index import Container
from vmctl_agent.runtime.logs import parse_time
from vmctl_agent.runtime.records import ZERO_TIME, State

STAMP = "2026-01-01T00:00:00.000000000Z"
T0 = parse_time(STAMP)


@pytest.mark.parametrize(
    ("elapsed", "text", "holds"),
    [
        (0.25, "Less than a second", 0.75),
        (5.25, "5 seconds", 0.75),
        (59.5, "59 seconds", 0.5),
        (90.0, "About a minute", 30.0),
        (125.0, "2 minutes", 55.0),
        (1.5, "1 second", 0.5),
        (3599.0, "59 minutes", 1.0),
        (3600.0, "About an hour", 1800.0),  # Go's HumanDuration rounds the hours
        (5400.0, "2 hours", 3600.0),
        (3 * 3600 + 600, "3 hours", 1200.0),
        (2 * 86400 + 1, "2 days", 1799.0),
        (3 * 7 * 86400, "3 weeks", 1800.0),
        (95 * 86400, "3 months", 1800.0),
        (3 * 365 * 86400 + 7200, "3 years", 1800.0),
        (-3.0, "Less than a second", 1.0),  # a clock that went back
    ],
)
def test_a_status_text_and_how_long_it_holds(elapsed, text, holds):
    got, until_change = _ago(STAMP, T0 + elapsed)
    assert got == text and until_change == pytest.approx(holds)


def test_an_exit_nobody_saw_end_reads_without_an_age(tmp_path):
    """A record from a crash has an exit code and no end time: Docker prints `Exited (255)`,
    not an age counted from year 1."""
    state = State(status="exited", exit_code=255, started_at=STAMP, finished_at=ZERO_TIME)
    crashed = Container(config=None, state=state, directory=tmp_path)
    assert status_text(crashed, T0 + 60) == ("Exited (255)", MAX_AGE)


def test_an_answer_is_given_again_only_for_its_query_generation_and_time():
    cache = ListCache()
    cache.put("all=1", generation=3, until=100.0, body=b"[1]")
    assert cache.get("all=1", 3, 99.0) == b"[1]"
    assert cache.get("all=1", 4, 99.0) is None  # a container changed
    assert cache.get("all=1", 3, 100.0) is None  # a Status text would read differently
    assert cache.get("", 3, 99.0) is None  # another question


def test_the_cache_stays_small_whatever_the_queries():
    cache = ListCache()
    for n in range(MAX_ENTRIES * 3):
        cache.put(f"limit={n}", 1, 10.0, b"[]")
    assert len(cache._entries) <= MAX_ENTRIES
    assert cache.get(f"limit={MAX_ENTRIES * 3 - 1}", 1, 0.0) == b"[]"
