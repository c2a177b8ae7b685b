"""Restart policies' pure half: Docker's checks and wording, who comes back, the back-off."""

from __future__ import annotations

import pytest
from vmctl_agent.runtime.restarts import RestartPolicy, Restarts, next_delay
from vmctl_agent.runtime.spec import InvalidSpec

ONLY_ON_FAILURE = "invalid restart policy: maximum retry count can only be used with 'on-failure'"


@pytest.mark.parametrize(
    ("name", "count", "message"),
    [
        (
            "sometimes",
            0,
            "invalid restart policy: unknown policy 'sometimes'; use one of 'no', 'always', "
            "'on-failure', or 'unless-stopped'",
        ),
        ("on-failure", -1, "invalid restart policy: maximum retry count cannot be negative"),
        ("always", 3, ONLY_ON_FAILURE),
        ("unless-stopped", 1, ONLY_ON_FAILURE),
        ("no", 2, ONLY_ON_FAILURE),
        ("always", -3, ONLY_ON_FAILURE + " and cannot be negative"),
    ],
)
def test_bad_policies_are_refused_in_dockers_words(name, count, message):
    with pytest.raises(InvalidSpec) as refused:
        RestartPolicy(name, count).check()
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("name", "count"),
    [("no", 0), ("always", 0), ("unless-stopped", 0), ("on-failure", 0), ("on-failure", 5)],
)
def test_good_policies_pass(name, count):
    RestartPolicy(name, count).check()


def test_who_comes_back():
    always, unless = RestartPolicy("always"), RestartPolicy("unless-stopped")
    on_failure, three = RestartPolicy("on-failure"), RestartPolicy("on-failure", 3)
    assert always.wants(0, 9, stopped=True, held=False)  # stopped once, back at the next life
    assert not always.wants(1, 0, stopped=True, held=True)
    assert unless.wants(0, 0, stopped=False, held=False)
    assert not unless.wants(0, 0, stopped=True, held=False)
    assert not on_failure.wants(0, 0, stopped=False, held=False)
    assert on_failure.wants(1, 1000, stopped=False, held=False)
    assert three.wants(2, 2, stopped=False, held=False)
    assert not three.wants(2, 3, stopped=False, held=False)
    assert not RestartPolicy().wants(1, 0, stopped=False, held=False)


def test_back_off_doubles_to_a_minute_and_a_steady_run_resets_it():
    delays, delay = [], 0.0
    for _ in range(12):
        delay = next_delay(delay, ran_for=0.5)
        delays.append(delay)
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-1] == 60.0 and max(delays) == 60.0
    assert next_delay(60.0, ran_for=10.0) == 0.1


def test_a_hold_cancels_the_pending_restart_and_a_start_releases_it():
    restarts = Restarts()
    delay, cancelled = restarts.schedule("c", ran_for=0)
    assert delay == 0.1 and restarts.pending("c") and not cancelled.is_set()
    assert restarts.schedule("c", ran_for=0)[0] == 0.2
    restarts.hold("c")
    assert cancelled.is_set() and not restarts.pending("c") and restarts.held("c")
    restarts.release("c")
    assert not restarts.held("c") and restarts.schedule("c", ran_for=0)[0] == 0.1
