"""Stage failures that only the node or the Job controller shows, end to end.

The cases: a container killed for exceeding its memory limit, an image that cannot be
pulled, a container whose Secret is missing and a Job whose pods name a missing
ServiceAccount.

The test node agent enforces memory limits and fails pulls from registry hosts under
`.invalid` (testenv/container_limits.py), so the operator reads the same container states
from the API server that a kubelet would report.
"""

from __future__ import annotations

import operator_harness as harness
from operator_harness import apply, condition, conversion, jobs_of, stage_of, wait_for_condition
from testenv.processes import wait_until

# Seconds a stage may fail to pull its image before the operator gives up on it here.
IMAGE_PULL_GRACE = "5"


def test_stage_over_memory_limit_is_out_of_memory(kube_api, operators):
    namespace = operators.namespace
    operator = operators.start()
    # Touches 256 MiB (bytes multiplication writes every page), four times the limit.
    greedy = "import time; block = b'x' * (256 * 2**20); time.sleep(120)"
    train = {"image": "team/trainer:1", "command": ["python", "-c", greedy],
             "output": {"uri": f"s3://{operators.bucket}/trained/model.pt"},
             "outputKind": "torchscript", "resources": {"limits": {"memory": "64Mi"}}}
    apply(kube_api, namespace, conversion("greedy", train=train))

    failed = wait_for_condition(kube_api, namespace, "greedy", "Ready", "False",
                                operators=(operator,))
    trained = condition(failed, "Trained")
    assert trained["status"] == "False"
    assert trained["reason"] == "OutOfMemory"
    assert "limit 64Mi" in trained["message"]
    assert condition(failed, "Ready")["reason"] == "OutOfMemory"
    assert failed["status"]["stage"] == "train"
    assert condition(failed, "Exported")["reason"] == "Pending"

    # A retry with the same limit would fail the same way: the operator deletes the Job.
    wait_until(lambda: not [job for job in jobs_of(kube_api, namespace)
                            if stage_of(job) == "train"],
               120, "the out-of-memory training Job to be deleted")


def test_unpullable_image_fails_after_grace_period(kube_api, operators):
    namespace = operators.namespace
    operator = operators.start("replica-a", "--image-pull-grace", IMAGE_PULL_GRACE)
    image = "registry.invalid/modelconv-stage:1"
    apply(kube_api, namespace, conversion("unpullable", stages={"export": {"image": image}}))

    failed = wait_for_condition(kube_api, namespace, "unpullable", "Ready", "False",
                                operators=(operator,))
    exported = condition(failed, "Exported")
    assert exported["status"] == "False"
    assert exported["reason"] == "ImagePullFailed"
    assert "registry.invalid" in exported["message"]
    assert f"for {IMAGE_PULL_GRACE} s" in exported["message"]
    assert condition(failed, "Ready")["reason"] == "ImagePullFailed"
    assert failed["status"]["stage"] == "export"

    # The Job would wait for its image forever: the operator deletes it.
    wait_until(lambda: not [job for job in jobs_of(kube_api, namespace)
                            if stage_of(job) == "export"],
               120, "the export Job that cannot pull its image to be deleted")


def test_missing_store_secret_fails_after_grace_period(kube_api, operators):
    namespace = operators.namespace
    # The last --store-secret wins: a Secret that this namespace does not have.
    operator = operators.start("replica-a", "--image-pull-grace", IMAGE_PULL_GRACE,
                               "--store-secret", "absent-credentials")
    apply(kube_api, namespace, conversion("nosecret"))

    failed = wait_for_condition(kube_api, namespace, "nosecret", "Ready", "False",
                                operators=(operator,))
    exported = condition(failed, "Exported")
    assert exported["status"] == "False"
    assert exported["reason"] == "ContainerConfigFailed"
    assert "absent-credentials" in exported["message"]
    assert "--store-secret" in exported["message"]
    assert condition(failed, "Ready")["reason"] == "ContainerConfigFailed"

    # The container would wait for the Secret forever: the operator deletes the Job.
    wait_until(lambda: not [job for job in jobs_of(kube_api, namespace)
                            if stage_of(job) == "export"],
               120, "the export Job without its Secret to be deleted")


def test_missing_stage_account_then_retry(kube_api, operators):
    namespace = operators.namespace
    operator = operators.start("replica-a", "--image-pull-grace", IMAGE_PULL_GRACE,
                               "--stage-service-account", "conversion-stages")
    apply(kube_api, namespace, conversion("noaccount"))

    # The ServiceAccount admission plugin rejects every pod of the Job.
    failed = wait_for_condition(kube_api, namespace, "noaccount", "Ready", "False",
                                operators=(operator,))
    exported = condition(failed, "Exported")
    assert exported["status"] == "False"
    assert exported["reason"] == "PodNotCreated"
    assert f"for {IMAGE_PULL_GRACE} s" in exported["message"]
    assert "--stage-service-account" in exported["message"]
    assert condition(failed, "Ready")["reason"] == "PodNotCreated"
    wait_until(lambda: not [job for job in jobs_of(kube_api, namespace)
                            if stage_of(job) == "export"],
               120, "the export Job without pods to be deleted")

    # With the ServiceAccount in place, a retry runs every stage as it.
    kube_api.post(f"/api/v1/namespaces/{namespace}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "conversion-stages"}, "automountServiceAccountToken": False})
    kube_api.merge_patch(harness.conversions_path(namespace, "noaccount"),
                         {"metadata": {"annotations": {"modelconv.io/retry": "1"}}})
    wait_until(lambda: harness.get(kube_api, namespace, "noaccount")["status"].get("retries") == 1,
               60, "the operator to start the retry run")
    done = wait_for_condition(kube_api, namespace, "noaccount", "Ready", "True",
                              operators=(operator,))
    assert condition(done, "Published")["status"] == "True"
    pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    assert pods
    assert {pod["spec"]["serviceAccountName"] for pod in pods} == {"conversion-stages"}
