"""Retrying a failed run with the `modelconv.io/retry` annotation, end to end: a stage that
failed for a cause outside the spec runs again once the cause is gone, without a spec change.
"""

from __future__ import annotations

from operator_harness import (
    apply,
    condition,
    conversion,
    jobs_of,
    request_retry,
    stage_of,
    wait_for_condition,
)


def upload_exported_mlp(s3, bucket: str, key: str, folder) -> None:
    """Export the test MLP with torch.export and upload the .pt2 file."""
    import torch

    from tests.operator.factories import mlp

    path = folder / "model.pt2"
    torch.export.save(torch.export.export(mlp(width=8), (torch.zeros(1, 4),)), str(path))
    s3.upload_file(str(path), bucket, key)


def test_retry_annotation_reruns_a_failed_stage(kube_api, operators, s3_server, tmp_path):
    namespace = operators.namespace
    operator = operators.start()
    key = "late/model.pt2"
    source = {"exportedProgram": {"uri": f"s3://{operators.bucket}/{key}"}}
    apply(kube_api, namespace, conversion("late", source=source))
    failed = wait_for_condition(kube_api, namespace, "late", "Ready", "False",
                                operators=(operator,))
    assert condition(failed, "Exported")["reason"] == "SourceNotFound"

    # The source arrives after the run failed; the spec stays the same.
    upload_exported_mlp(s3_server.client(), operators.bucket, key, tmp_path)
    request_retry(kube_api, namespace, "late")
    done = wait_for_condition(kube_api, namespace, "late", "Ready", "True",
                              operators=(operator,))
    status = done["status"]
    assert status["observedGeneration"] == 1
    assert (status["retry"], status["retries"]) == ("1", 1)
    assert status["runHash"] != failed["status"]["runHash"]
    assert condition(done, "Exported")["reason"] == "Succeeded"
    # Only the new run's Jobs are left: one per stage.
    run = status["runHash"][:16]
    jobs = jobs_of(kube_api, namespace)
    assert sorted(stage_of(job) for job in jobs) == ["convert", "export", "publish", "validate"]
    assert {job["metadata"]["labels"]["modelconv.io/run"] for job in jobs} == {run}
