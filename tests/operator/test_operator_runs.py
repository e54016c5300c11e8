"""The operator end to end: real Jobs on the node agent, real stages, the release in S3.

Every test runs `modelconv operator` under a ServiceAccount bound to exactly the rules of
modelconv.controller.rbac, against the test control plane and the S3 server.
"""

from __future__ import annotations

import json

import operator_harness as harness
from operator_harness import (
    apply,
    condition,
    conversion,
    get,
    jobs_of,
    settle,
    stage_of,
    wait_for_condition,
    wait_for_job,
)
from testenv.api import ApiError
from testenv.processes import wait_until

STAGES = ("export", "convert", "validate", "publish")


def stage_jobs(api, namespace: str, uid: str) -> dict[str, list[dict]]:
    jobs: dict[str, list[dict]] = {}
    for job in jobs_of(api, namespace):
        if job["metadata"]["labels"].get("modelconv.io/conversion-uid") == uid:
            jobs.setdefault(stage_of(job), []).append(job)
    return jobs


def test_conversion_publishes_and_reuses_cache(kube_api, operators, s3_server):
    namespace = operators.namespace
    operator = operators.start()
    device = {"device": {"enabled": True, "required": False}}
    apply(kube_api, namespace, conversion("mlp", validation=device))

    done = wait_for_condition(kube_api, namespace, "mlp", "Ready", "True", operators=(operator,))
    status = done["status"]
    for type_ in ("Exported", "Converted", "Validated", "Published"):
        assert condition(done, type_)["status"] == "True", type_
        assert condition(done, type_)["reason"] == "Succeeded", type_
        assert condition(done, type_)["observedGeneration"] == 1, type_
    skipped = condition(done, "DeviceVerified")
    assert (skipped["status"], skipped["reason"]) == ("False", "Skipped")
    assert status["stage"] == "Done"
    assert status["observedGeneration"] == 1
    assert "worstError" in status["metrics"]

    # The release is in the S3 server, its manifest written.
    release = status["release"]
    assert release["location"] == f"{operators.store}/mlp/1.0.0"
    assert release["manifestDigest"].startswith("sha256:")
    s3 = s3_server.client()
    head = s3.head_object(Bucket=operators.bucket, Key="releases/mlp/1.0.0/manifest.json")
    assert head["ContentLength"] > 0

    # One Job per stage, owned by the conversion, each done in one attempt.
    uid = done["metadata"]["uid"]
    jobs = stage_jobs(kube_api, namespace, uid)
    assert sorted(jobs) == sorted(STAGES)
    for stage, found in jobs.items():
        assert len(found) == 1, stage
        assert found[0]["metadata"]["ownerReferences"][0]["uid"] == uid
        assert found[0]["status"].get("succeeded") == 1, stage
        assert status["stages"][stage]["attempts"] == 1, stage

    # Events announce the stage transitions.
    events = kube_api.get(f"/api/v1/namespaces/{namespace}/events",
                          fieldSelector=f"involvedObject.uid={uid}")["items"]
    reasons = {event["reason"] for event in events}
    assert {"Running", "Succeeded", "Published", "Skipped"} <= reasons

    # The same model and settings in another resource reuse the cached conversion.
    apply(kube_api, namespace, conversion("mlp-copy", version="2.0.0", validation=device))
    copy = wait_for_condition(kube_api, namespace, "mlp-copy", "Ready", "True",
                              operators=(operator,))
    for type_ in ("Exported", "Converted", "Validated"):
        assert condition(copy, type_)["reason"] == "CacheHit", type_
    assert sorted(stage_jobs(kube_api, namespace, copy["metadata"]["uid"])) == ["publish"]
    s3.head_object(Bucket=operators.bucket, Key="releases/mlp-copy/2.0.0/manifest.json")

    # A model's releases deleted by hand are published again, not reported from the
    # publish cache. (With its index.json kept, the new manifest would not match the
    # index, and publish fails with IntegrityFailed.)
    listed = s3.list_objects_v2(Bucket=operators.bucket, Prefix="releases/mlp-copy/")
    for item in listed["Contents"]:
        s3.delete_object(Bucket=operators.bucket, Key=item["Key"])
    again = conversion("mlp-again", version="2.0.0", validation=device)
    again["spec"]["publish"]["model"] = "mlp-copy"
    apply(kube_api, namespace, again)
    republished = wait_for_condition(kube_api, namespace, "mlp-again", "Ready", "True",
                                     operators=(operator,))
    assert not republished["status"]["stages"]["publish"].get("cacheHit")
    s3.head_object(Bucket=operators.bucket, Key="releases/mlp-copy/2.0.0/manifest.json")

    # Changing only the publish settings reruns only publish.
    kube_api.merge_patch(harness.conversions_path(namespace, "mlp"),
                         {"spec": {"publish": {"version": "1.1.0"}}})
    wait_for_condition(kube_api, namespace, "mlp", "Ready", "Unknown", operators=(operator,))
    edited = wait_for_condition(kube_api, namespace, "mlp", "Ready", "True",
                                operators=(operator,))
    assert edited["status"]["observedGeneration"] == 2
    assert condition(edited, "Ready")["observedGeneration"] == 2
    for type_ in ("Exported", "Converted", "Validated"):
        assert condition(edited, type_)["reason"] == "CacheHit", type_
    assert condition(edited, "Published")["reason"] == "Succeeded"
    assert sorted(stage_jobs(kube_api, namespace, uid)) == ["publish"]
    assert edited["status"]["release"]["location"] == f"{operators.store}/mlp/1.1.0"

    # Applying the same spec again changes nothing: no Job, no status write.
    before = get(kube_api, namespace, "mlp")
    kube_api.merge_patch(harness.conversions_path(namespace, "mlp"),
                         {"metadata": {"annotations": {"touched": "yes"}},
                          "spec": {"publish": {"version": "1.1.0"}}})
    settle(10)
    after = get(kube_api, namespace, "mlp")
    assert after["metadata"]["generation"] == 2
    assert after["status"] == before["status"], json.dumps(
        {"before": before["status"]["stages"], "after": after["status"]["stages"]}, indent=1)
    assert [job["metadata"]["name"] for job in jobs_of(kube_api, namespace)
            if job["metadata"]["labels"]["modelconv.io/conversion-uid"] == uid] == [
        job["metadata"]["name"] for job in stage_jobs(kube_api, namespace, uid)["publish"]]


def test_failing_stage_reports_its_reason(kube_api, operators):
    namespace = operators.namespace
    operator = operators.start()
    missing = {"exportedProgram": {"uri": f"s3://{operators.bucket}/missing/model.pt2"}}
    apply(kube_api, namespace, conversion("broken", source=missing))

    failed = wait_for_condition(kube_api, namespace, "broken", "Ready", "False",
                                operators=(operator,))
    exported = condition(failed, "Exported")
    assert exported["status"] == "False"
    assert exported["reason"] == "SourceNotFound"
    assert "missing/model.pt2" in exported["message"]
    assert condition(failed, "Ready")["reason"] == "SourceNotFound"
    assert failed["status"]["stage"] == "export"
    assert condition(failed, "Converted")["reason"] == "Pending"

    # Exit code 2 failed the Job at once (podFailurePolicy): one pod, no retry.
    (job,) = [job for job in jobs_of(kube_api, namespace) if stage_of(job) == "export"]
    assert job["status"].get("failed") == 1
    reasons = [item["reason"] for item in job["status"]["conditions"] if item["type"] == "Failed"]
    assert reasons == ["PodFailurePolicy"]
    assert failed["status"]["stages"]["export"]["attempts"] == 1

    # A failed stage is not retried while the spec stays the same.
    settle(8)
    assert len([job for job in jobs_of(kube_api, namespace) if stage_of(job) == "export"]) == 1


def test_edit_mid_run_supersedes_the_old_run(kube_api, operators):
    namespace = operators.namespace
    operator = operators.start()
    apply(kube_api, namespace, conversion("edited", width=6))
    old_job = wait_for_job(kube_api, namespace, "export")
    old_run = old_job["metadata"]["labels"]["modelconv.io/run"]

    kube_api.merge_patch(harness.conversions_path(namespace, "edited"),
                         {"spec": {"source": {"factory": {"kwargs": {"width": 5}}}}})
    done = wait_for_condition(kube_api, namespace, "edited", "Ready", "True",
                              operators=(operator,))
    assert done["status"]["observedGeneration"] == 2
    new_run = done["status"]["runHash"][:16]
    assert new_run != old_run

    # Nothing of the old run is left: its Jobs (with their Pods) and its ConfigMap.
    wait_until(lambda: all(job["metadata"]["labels"]["modelconv.io/run"] == new_run
                           for job in jobs_of(kube_api, namespace)),
               120, "the old run's Jobs to be deleted")
    config_maps = kube_api.get(f"/api/v1/namespaces/{namespace}/configmaps",
                               labelSelector="app.kubernetes.io/managed-by=modelconv-operator")
    assert [item["metadata"]["labels"]["modelconv.io/run"]
            for item in config_maps["items"]] == [new_run]
    assert sorted(stage_of(job) for job in jobs_of(kube_api, namespace)) == sorted(STAGES)


def test_deleting_a_conversion_leaves_nothing_behind(kube_api, operators):
    namespace = operators.namespace
    operators.start()
    apply(kube_api, namespace, conversion("doomed", width=7))
    wait_for_job(kube_api, namespace, "export",
                 where=lambda job: (job.get("status") or {}).get("active", 0) > 0)

    kube_api.delete(harness.conversions_path(namespace, "doomed"))
    owned = "app.kubernetes.io/managed-by=modelconv-operator"

    def nothing_left() -> bool:
        try:
            get(kube_api, namespace, "doomed")
            return False
        except ApiError as error:
            if error.status != 404:
                raise
        for kind in ("/apis/batch/v1/namespaces/{}/jobs", "/api/v1/namespaces/{}/pods",
                     "/api/v1/namespaces/{}/configmaps"):
            if kube_api.get(kind.format(namespace), labelSelector=owned)["items"]:
                return False
        return True

    wait_until(nothing_left, 180, "the conversion, its Jobs, Pods and ConfigMap to be gone")


def test_training_output_becomes_the_source(kube_api, operators, s3_server):
    namespace = operators.namespace
    operator = operators.start()
    output = f"s3://{operators.bucket}/trained/model.pt"
    train = {"image": "team/trainer:1", "command": ["python", "-m", "tests.operator.trainer"],
             "output": {"uri": output}, "outputKind": "torchscript"}
    apply(kube_api, namespace, conversion("trained", train=train))

    done = wait_for_condition(kube_api, namespace, "trained", "Ready", "True",
                              operators=(operator,))
    trained = condition(done, "Trained")
    assert (trained["status"], trained["reason"]) == ("True", "Succeeded")
    train_job = [job for job in jobs_of(kube_api, namespace) if stage_of(job) == "train"]
    assert len(train_job) == 1
    assert done["status"]["stages"]["train"]["runId"] == train_job[0]["metadata"]["uid"]
    s3_server.client().head_object(Bucket=operators.bucket, Key="trained/model.pt")

    # The stages after training read the trained model: the run file names it as source.
    config_maps = kube_api.get(f"/api/v1/namespaces/{namespace}/configmaps",
                               labelSelector="app.kubernetes.io/managed-by=modelconv-operator")
    (run_file,) = [json.loads(item["data"]["run.json"]) for item in config_maps["items"]]
    assert run_file["source"] == {"uri": output, "kind": "torchscript"}
    assert set(run_file["stages"]) == set(STAGES)
    assert condition(done, "Exported")["status"] == "True"
