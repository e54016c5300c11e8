"""Leader election rules (modelconv.controller.leader.decide), on a virtual clock."""

from __future__ import annotations

import pytest

from modelconv.controller.leader import ACQUIRE, RENEW, WAIT, LeaderElector, Observation, decide


def lease(holder: str, renew: str = "t0", duration: int = 15) -> dict:
    return {"metadata": {"resourceVersion": "1"},
            "spec": {"holderIdentity": holder, "renewTime": renew,
                     "leaseDurationSeconds": duration}}


def test_missing_lease_is_acquired():
    assert decide(None, "me", Observation(), now=0.0) == ACQUIRE


def test_released_lease_is_acquired_at_once():
    assert decide(lease(""), "me", Observation(), now=0.0) == ACQUIRE


def test_own_lease_is_renewed():
    assert decide(lease("me"), "me", Observation(), now=0.0) == RENEW


def test_a_live_leader_is_left_alone():
    seen = Observation()
    assert decide(lease("other", renew="t0"), "me", seen, now=100.0) == WAIT
    # The leader renews: the record changes, so the wait starts again.
    assert decide(lease("other", renew="t1"), "me", seen, now=110.0) == WAIT
    assert decide(lease("other", renew="t1"), "me", seen, now=124.9) == WAIT


def test_a_silent_leader_is_taken_over_after_one_lease_duration():
    seen = Observation()
    assert decide(lease("other", renew="t0"), "me", seen, now=100.0) == WAIT
    assert decide(lease("other", renew="t0"), "me", seen, now=114.9) == WAIT
    assert decide(lease("other", renew="t0"), "me", seen, now=115.0) == ACQUIRE


def test_expiry_is_measured_on_the_candidates_own_clock():
    # A renewTime far in the past says nothing: a newly started candidate waits a full
    # lease duration from its first look, whatever the other machine's clock wrote.
    seen = Observation()
    assert decide(lease("other", renew="1970-01-01T00:00:00.000000Z"), "me", seen,
                  now=5000.0) == WAIT
    assert decide(lease("other", renew="1970-01-01T00:00:00.000000Z"), "me", seen,
                  now=5015.0) == ACQUIRE


def test_timings_must_be_ordered():
    with pytest.raises(ValueError, match="retry period"):
        LeaderElector(None, "ns", "lease", "me", lease_duration=10, renew_deadline=12,
                      retry_period=2)
