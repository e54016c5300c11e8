"""Reading stage outcomes from Job and Pod projections (modelconv.controller.observe)."""

from __future__ import annotations

import datetime
import json

import pytest

from modelconv.controller import observe

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def job_body(*, conditions=(), active=0, failed=0, succeeded=0, memory_limit=None,
             created="2026-01-01T11:58:00Z") -> dict:
    container = {"name": "stage", "image": "stage:1"}
    if memory_limit:
        container["resources"] = {"limits": {"memory": memory_limit}}
    return {
        "metadata": {"name": "mlp-convert-abc", "namespace": "ns", "uid": "job-uid",
                     "creationTimestamp": created,
                     "labels": {"modelconv.io/conversion-uid": "conv-uid",
                                "modelconv.io/run": "r" * 16, "modelconv.io/stage": "convert"},
                     "ownerReferences": [{"uid": "conv-uid", "controller": True}]},
        "spec": {"template": {"spec": {"containers": [container]}}},
        "status": {"conditions": [dict(item) for item in conditions], "active": active,
                   "failed": failed, "succeeded": succeeded,
                   "completionTime": "2026-01-01T11:59:00Z" if succeeded else None},
    }


def pod_body(*, created="2026-01-01T11:58:00Z", waiting=None, terminated=None,
             last_terminated=None) -> dict:
    state, last = {}, {}
    if waiting:
        state["waiting"] = waiting
    if terminated:
        state["terminated"] = terminated
    if last_terminated:
        last["terminated"] = last_terminated
    return {
        "metadata": {"name": "mlp-convert-abc-x1", "creationTimestamp": created,
                     "labels": {"batch.kubernetes.io/job-name": "mlp-convert-abc"}},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "stage", "state": state, "lastState": last}]},
    }


def outcome(job: dict, pods=(), grace=60.0):
    return observe.job_outcome(observe.job_projection(job),
                               [observe.pod_projection(pod) for pod in pods],
                               now=NOW, image_pull_grace=grace)


def test_projection_keeps_owner_run_and_stage():
    projection = observe.job_projection(job_body())
    assert projection["owner"] == "conv-uid"
    assert projection["conversionUid"] == "conv-uid"
    assert projection["stage"] == "convert"
    assert projection["run"] == "r" * 16
    assert observe.pod_projection(pod_body())["job"] == "mlp-convert-abc"


def test_running_job_counts_one_attempt_per_pod():
    result = outcome(job_body(active=1, failed=1), [pod_body(), pod_body()])
    assert result.state == "Running"
    assert result.attempts == 2
    assert result.stop is False


def test_complete_job_succeeded():
    result = outcome(job_body(conditions=[{"type": "Complete", "status": "True"}], succeeded=1))
    assert result.state == "Succeeded"
    assert result.finished == "2026-01-01T11:59:00Z"


def test_permanent_failure_reason_from_summary():
    summary = {"stage": "validate", "succeeded": False, "reason": "ToleranceExceeded",
               "message": "output logits: max |error| 0.3 > atol"}
    job = job_body(failed=1, conditions=[
        {"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
         "message": "Container stage for pod ns/x failed with exit code 2"}])
    pod = pod_body(terminated={"reason": "Error", "exitCode": 2,
                               "message": json.dumps(summary)})
    result = outcome(job, [pod])
    assert result.state == "Failed"
    assert result.reason == "ToleranceExceeded"
    assert result.message == "output logits: max |error| 0.3 > atol"


def test_retries_exhausted_names_count():
    job = job_body(failed=3, conditions=[
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "message": "Job has reached the specified backoff limit"}])
    pod = pod_body(terminated={"reason": "Error", "exitCode": 1,
                               "message": "Traceback...\nConnectionError: store unreachable"})
    result = outcome(job, [pod])
    assert result.reason == "RetriesExhausted"
    assert "failed 3 times" in result.message
    assert "ConnectionError: store unreachable" in result.message


def test_retries_exhausted_keeps_stage_reason():
    job = job_body(failed=3, conditions=[
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "x"}])
    summary = {"stage": "export", "succeeded": False, "reason": "StoreUnavailable",
               "message": "reading s3://b/k failed: EndpointConnectionError"}
    pod = pod_body(terminated={"reason": "Error", "exitCode": 1, "message": json.dumps(summary)})
    result = outcome(job, [pod])
    assert result.reason == "StoreUnavailable"
    assert "failed 3 times" in result.message
    assert "EndpointConnectionError" in result.message


def test_deadline_exceeded_says_which_setting_to_raise():
    job = job_body(failed=1, conditions=[
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "x"}])
    result = outcome(job)
    assert result.reason == "DeadlineExceeded"
    assert "activeDeadlineSeconds" in result.message


def test_oom_killed_names_memory_limit():
    pod = pod_body(last_terminated={"reason": "OOMKilled", "exitCode": 137, "message": None})
    result = outcome(job_body(active=1, failed=1, memory_limit="512Mi"), [pod])
    assert result.state == "Failed"
    assert result.reason == "OutOfMemory"
    assert "512Mi" in result.message
    assert "resources.limits.memory" in result.message
    assert result.stop is True


@pytest.mark.parametrize(("waiting", "reason"), [
    ({"reason": "ImagePullBackOff", "message": "Back-off pulling image stage:404"},
     "ImagePullFailed"),
    ({"reason": "CreateContainerConfigError", "message": "secret ml/store-credentials not found"},
     "ContainerConfigFailed"),
])
def test_waiting_container_fails_after_grace(waiting, reason):
    young = pod_body(created="2026-01-01T11:59:30Z", waiting=waiting)
    assert outcome(job_body(active=1), [young], grace=60).state == "Running"

    old = pod_body(created="2026-01-01T11:57:00Z", waiting=waiting)
    result = outcome(job_body(active=1), [old], grace=60)
    assert result.state == "Failed"
    assert result.reason == reason
    assert waiting["message"] in result.message
    assert result.stop is True


def test_podless_job_fails_after_grace():
    young = job_body(created="2026-01-01T11:59:30Z")
    assert outcome(young, [], grace=60).state == "Running"

    result = outcome(job_body(created="2026-01-01T11:57:00Z"), [], grace=60)
    assert result.state == "Failed"
    assert result.reason == "PodNotCreated"
    assert "kubectl get events -n ns --field-selector involvedObject.name=mlp-convert-abc" \
        in result.message
    assert "--stage-service-account" in result.message
    assert result.stop is True


def test_suspended_job_waits_without_pods():
    suspended = job_body(created="2026-01-01T11:00:00Z")
    suspended["spec"]["suspend"] = True
    assert outcome(suspended, [], grace=60).state == "Running"

    # Resumed 30 s ago: the grace period counts from its new startTime.
    resumed = job_body(created="2026-01-01T11:00:00Z")
    resumed["status"]["startTime"] = "2026-01-01T11:59:30Z"
    assert outcome(resumed, [], grace=60).state == "Running"


def test_counted_pods_are_not_podless():
    # A Job whose pods were counted but are gone from the index did create them.
    old = job_body(created="2026-01-01T11:00:00Z", failed=1)
    assert outcome(old, [], grace=60).state == "Running"


def test_plain_termination_message_is_no_summary():
    pod = pod_body(terminated={"reason": "Error", "exitCode": 2, "message": "not json"})
    assert observe.termination_summary([observe.pod_projection(pod)]) is None


def test_result_outcome_reads_result_json():
    assert observe.result_outcome({"succeeded": True, "message": "ok"}) == ("Succeeded", "", "ok")
    assert observe.result_outcome({"succeeded": False, "reason": "UnsupportedOperator",
                                   "message": "op x"}) == ("Failed", "UnsupportedOperator", "op x")


def test_pod_in_trouble_cases():
    assert not observe.pod_in_trouble(observe.pod_projection(pod_body()))
    assert not observe.pod_in_trouble(observe.pod_projection(
        pod_body(terminated={"reason": "Completed", "exitCode": 0, "message": "{}"})))
    assert observe.pod_in_trouble(observe.pod_projection(
        pod_body(last_terminated={"reason": "OOMKilled", "exitCode": 137})))
    assert observe.pod_in_trouble(observe.pod_projection(
        pod_body(waiting={"reason": "ErrImagePull", "message": "not found"})))
    assert observe.pod_in_trouble(observe.pod_projection(
        pod_body(waiting={"reason": "CreateContainerConfigError", "message": "no secret"})))
