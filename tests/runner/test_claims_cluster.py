"""Claims, requeues and runner Leases against the real kube-apiserver, in one process.

These drive the same functions the agent and the controller call, with a virtual `now`
where a test needs a heartbeat to look stale, so no test waits for a clock.
"""

from __future__ import annotations

import datetime
import threading

import pytest
from runner_fixtures import device_spec, manifest_for, upload_check_objects

from modelconv.runner.checks import create_check, evaluate_check
from modelconv.runner.claims import CheckOutcome, ClaimLost, claim_check
from modelconv.runner.kube import CheckApi, LeaseApi
from modelconv.runner.lease import RunnerLease, RunnerNameTaken
from modelconv.runner.pool import lease_labels
from modelconv.runner.resource import UnitResult, status_of, utc_now

LATER = datetime.timedelta(seconds=30)


@pytest.fixture
def make_check(pool, s3_store, tiny_model):
    """Create a check in the pool namespace and return its name."""
    objects = upload_check_objects(s3_store, "claims", tiny_model.package_zip,
                                   tiny_model.samples_safetensors)
    counter = iter(range(1000))

    def create(spec=None, **settings) -> str:
        manifest = manifest_for(s3_store, objects, pool.namespace, f"c{next(counter)}",
                                spec=spec, **settings)
        return create_check(pool.client, manifest)["metadata"]["name"]

    return create


def _outcome(runner: str) -> CheckOutcome:
    result = UnitResult(backend="mil-reference", passed=True, max_abs_error=0.0, cosine=1.0)
    return CheckOutcome(True, "ChecksPassed", f"done by {runner}", [result])


def test_exactly_one_of_racing_claims_wins(pool, make_check):
    checks = CheckApi(pool.client, pool.namespace)
    name = make_check()
    snapshot = checks.get(name)
    claims, start = [], threading.Barrier(8)

    def race(index: int) -> None:
        start.wait()
        claims.append(claim_check(checks, snapshot, f"runner-{index}", {}))

    threads = [threading.Thread(target=race, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [claim for claim in claims if claim is not None]
    assert len(winners) == 1
    status = status_of(checks.get(name))
    assert status.state == "Claimed"
    assert status.runner == winners[0].runner
    assert status.claim_id == winners[0].claim_id
    assert status.attempts == 1


def test_late_result_of_lost_claim_is_rejected(pool, make_check):
    checks = CheckApi(pool.client, pool.namespace)
    name = make_check()
    first = claim_check(checks, checks.get(name), "runner-a", {"backend": "mil-reference"})

    # The controller finds runner-a silent and requeues the check.
    evaluation = evaluate_check(pool.client, pool.namespace, name, now=utc_now() + LATER)
    assert evaluation.state == "Requeued"
    assert evaluation.reason == "RunnerLost"
    requeued = status_of(checks.get(name))
    assert requeued.state == "Pending"
    assert requeued.claim_id is None

    second = claim_check(checks, checks.get(name), "runner-b", {"backend": "mil-reference"})
    assert second is not None
    with pytest.raises(ClaimLost, match="now: runner runner-b"):
        first.finish(_outcome("runner-a"))
    with pytest.raises(ClaimLost):
        first.heartbeat()
    second.finish(_outcome("runner-b"))

    status = status_of(checks.get(name))
    assert status.state == "Succeeded"
    assert status.runner == "runner-b"
    assert status.message == "done by runner-b"
    assert status.attempts == 2
    assert len(status.results) == 1


def test_runner_that_renews_heartbeat_keeps_its_claim(pool, make_check):
    checks = CheckApi(pool.client, pool.namespace)
    name = make_check(heartbeat_seconds=5)
    claim = claim_check(checks, checks.get(name), "runner-a", {})
    claim.heartbeat()
    evaluation = evaluate_check(pool.client, pool.namespace, name,
                                now=utc_now() + datetime.timedelta(seconds=10))
    assert evaluation.state == "Claimed"
    assert evaluation.retry_after == 5.0


def test_lost_runner_past_max_attempts_fails_the_check(pool, make_check):
    checks = CheckApi(pool.client, pool.namespace)
    name = make_check(max_attempts=1)
    claim = claim_check(checks, checks.get(name), "runner-a", {})
    evaluation = evaluate_check(pool.client, pool.namespace, name, now=utc_now() + LATER)
    assert evaluation.state == "Failed"
    assert evaluation.reason == "RunnerLost"
    assert "1 of 1 attempts used" in evaluation.message
    with pytest.raises(ClaimLost):
        claim.finish(_outcome("runner-a"))
    assert status_of(checks.get(name)).state == "Failed"


def test_check_past_its_deadline_fails(pool, make_check):
    name = make_check(timeout_seconds=60)
    evaluation = evaluate_check(pool.client, pool.namespace, name,
                                now=utc_now() + datetime.timedelta(seconds=61))
    assert evaluation.state == "Failed"
    assert evaluation.reason == "DeadlineExceeded"
    assert "never claimed" in evaluation.message
    again = evaluate_check(pool.client, pool.namespace, name)
    assert again.state == "Failed"
    assert again.final


def test_released_claim_returns_to_pending_without_counting(pool, make_check):
    checks = CheckApi(pool.client, pool.namespace)
    name = make_check()
    claim = claim_check(checks, checks.get(name), "runner-a", {})
    claim.release("runner runner-a stopped before finishing it")
    status = status_of(checks.get(name))
    assert status.state == "Pending"
    assert status.attempts == 0
    assert status.runner is None
    with pytest.raises(ClaimLost):
        claim.finish(_outcome("runner-a"))


def test_no_runner_until_matching_lease(pool, make_check):
    checks = CheckApi(pool.client, pool.namespace)
    name = make_check(spec=device_spec(chip="m2"))
    evaluation = evaluate_check(pool.client, pool.namespace, name)
    assert evaluation.state == "NoRunnerAvailable"
    assert "matches chip m2" in evaluation.message
    assert status_of(checks.get(name)).reason == "NoRunnerAvailable"

    leases = LeaseApi(pool.client, pool.namespace)
    other = RunnerLease(leases, "mac-m1", lease_labels({"chip": "m1"}, "coreml"), 30, 1)
    other.acquire()
    assert evaluate_check(pool.client, pool.namespace, name).state == "NoRunnerAvailable"

    matching = RunnerLease(leases, "mac-m2", lease_labels({"chip": "m2"}, "coreml"), 30, 1)
    matching.acquire()
    evaluation = evaluate_check(pool.client, pool.namespace, name)
    assert evaluation.state == "Pending"
    assert status_of(checks.get(name)).reason is None

    matching.release()
    assert evaluate_check(pool.client, pool.namespace, name).state == "NoRunnerAvailable"


def test_second_agent_with_a_live_name_is_rejected(pool):
    leases = LeaseApi(pool.client, pool.namespace)
    first = RunnerLease(leases, "mac-1", lease_labels({}, "coreml"), 30, 1)
    first.acquire()
    second = RunnerLease(leases, "mac-1", lease_labels({}, "coreml"), 30, 1)
    with pytest.raises(RunnerNameTaken, match="held by a live agent"):
        second.acquire()
    first.release()
    second.acquire()
    with pytest.raises(RunnerNameTaken):
        first.renew()
