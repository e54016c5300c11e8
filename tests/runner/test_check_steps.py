"""`step_check`: what one look at a check decides, and which status write it needs.

The operator's device stage and `evaluate_check` both wrap this pure decision in their own
reads and conditioned write; the cluster tests (test_claims_cluster.py) cover the wrapping.
"""

from __future__ import annotations

import datetime

from test_device_decision import NOW, OBJECTS, LoopbackPresigner, _spec

from modelconv.runner.checks import check_manifest, needs_runners, step_check
from modelconv.runner.pool import RunnerRecord
from modelconv.runner.resource import timestamp

LATER = datetime.timedelta


def check_object(status: dict | None = None, **settings) -> dict:
    """A check as the API server returns it: manifest, resourceVersion and status."""
    settings.setdefault("heartbeat_seconds", 10)
    manifest = check_manifest({"metadata": {"name": "conv", "namespace": "team"}},
                              _spec(required=False),
                              "a" * 64, OBJECTS, LoopbackPresigner(), namespace="pool",
                              now=NOW, **settings)
    manifest["metadata"]["resourceVersion"] = "7"
    if status is not None:
        manifest["status"] = status
    return manifest


def claimed(attempts: int, heartbeat: datetime.datetime) -> dict:
    return {"state": "Claimed", "runner": "mini-1", "claimId": "c1", "attempts": attempts,
            "claimTime": timestamp(NOW), "heartbeatTime": timestamp(heartbeat)}


def runner(name: str, **labels) -> RunnerRecord:
    return RunnerRecord(name=name, holder=name, labels=labels, renew_time=NOW,
                        duration_seconds=30, concurrency=1)


def test_fresh_heartbeat_needs_no_write():
    step = step_check(check_object(claimed(1, NOW)), NOW + LATER(seconds=5))
    assert step.write is None
    assert step.evaluation.state == "Claimed"
    assert step.evaluation.retry_after == 10.0
    assert step.evaluation.runner == "mini-1"
    assert step.evaluation.attempts == 1


def test_stale_heartbeat_requeues_the_check():
    step = step_check(check_object(claimed(1, NOW)), NOW + LATER(seconds=31))
    assert step.evaluation.state == "Requeued"
    assert step.evaluation.reason == "RunnerLost"
    assert step.write.state == "Pending"
    assert step.write.claim_id is None
    assert step.write.runner is None
    assert step.write.attempts == 1
    # Losing the race to the runner's own write means: look again, nothing was requeued.
    assert step.outcome(written=False).state == "Claimed"
    assert step.outcome(written=True).state == "Requeued"


def test_stale_heartbeat_past_limit_fails():
    step = step_check(check_object(claimed(3, NOW), max_attempts=3), NOW + LATER(seconds=31))
    assert step.evaluation.state == "Failed"
    assert step.evaluation.reason == "RunnerLost"
    assert "3 of 3 attempts used" in step.evaluation.message
    assert step.write.state == "Failed"
    assert step.write.completion_time == NOW + LATER(seconds=31)


def test_check_past_deadline_fails():
    obj = check_object(timeout_seconds=60)
    assert not needs_runners(obj, NOW + LATER(seconds=61))
    step = step_check(obj, NOW + LATER(seconds=61))
    assert step.evaluation.reason == "DeadlineExceeded"
    assert "never claimed" in step.evaluation.message
    assert step.write.state == "Failed"


def test_no_matching_runner_is_written_once():
    obj = check_object()
    assert needs_runners(obj, NOW)
    step = step_check(obj, NOW, [runner("linux-1", chip="cpu", backend="mil-reference")])
    # The optional check accepts any backend, so this runner matches.
    assert step.evaluation.state == "Pending"
    assert step.write is None

    required = check_object()
    required["spec"]["requirements"] = {"backend": "coreml"}
    step = step_check(required, NOW, [runner("linux-1", backend="mil-reference")])
    assert step.evaluation.state == "NoRunnerAvailable"
    assert "backend coreml" in step.evaluation.message
    assert step.write.reason == "NoRunnerAvailable"

    required["status"] = step.write.document()
    again = step_check(required, NOW, [])
    assert again.evaluation.state == "NoRunnerAvailable"
    assert again.write is None


def test_empty_pool_message_names_no_requirements():
    step = step_check(check_object(), NOW, [])
    assert step.evaluation.state == "NoRunnerAvailable"
    assert "matches" not in step.evaluation.message
    assert "no live runner in namespace" in step.evaluation.message
    assert "start `modelconv agent` on a Mac in this pool" in step.evaluation.message


def test_returning_runner_clears_no_runner():
    obj = check_object({"state": "Pending", "reason": "NoRunnerAvailable", "message": "none"})
    step = step_check(obj, NOW, [runner("mini-1", backend="coreml")])
    assert step.evaluation.state == "Pending"
    assert step.write.reason is None


def test_settled_check_needs_no_write():
    result = {"backend": "coreml", "computeUnit": "all", "passed": True}
    obj = check_object({"state": "Succeeded", "runner": "mini-1", "attempts": 2,
                        "reason": "ChecksPassed", "results": [result],
                        "report": "cache/device/k/report.json"})
    step = step_check(obj, NOW + LATER(days=1))
    assert step.write is None
    assert step.evaluation.device_verified
    assert step.evaluation.runner == "mini-1"
    assert step.evaluation.attempts == 2
    assert step.evaluation.report_key == "cache/device/k/report.json"
