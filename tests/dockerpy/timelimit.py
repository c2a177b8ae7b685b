"""A per-test time limit for docker-py's suite (loaded with `-p timelimit`): a hung attach or
a wait that never ends fails its own test instead of holding the whole run.

SIGALRM interrupts whatever blocking call the test is in; the test fails with a message that
says it ran out of time. The limit is `VMCTL_SUITE_TEST_SECONDS` (default 120).
"""

from __future__ import annotations

import os
import signal

import pytest

LIMIT = int(os.environ.get("VMCTL_SUITE_TEST_SECONDS", "120"))


class TimeLimitExceeded(Exception):
    pass


def _expired(signum, frame):
    raise TimeLimitExceeded(f"the test ran longer than its limit of {LIMIT} s")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    previous = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
