"""Stage failures that only the node or the Job controller shows, end to end.

The cases: a container killed for exceeding its memory limit, an image that cannot be
pulled, a container whose Secret is missing and a Job whose pods name a missing
ServiceAccount.

The test node agent enforces memory limits and fails pulls from registry hosts under
`.invalid` (testenv/container_limits.py), so the operator reads the same container states
from the API server that a kubelet would report.
"""

from __future__ import annotations

from operator_harness import (
    apply,
    condition,
    conversion,
    request_retry,
    wait_for_condition,
    wait_for_no_job,
)

# Seconds a stage may fail to pull its image before the operator gives up on it here.
IMAGE_PULL_GRACE = "5"


def failed_at_export(kube_api, namespace: str, name: str, operator, reason: str) -> dict:
    """Wait until the run fails; check that export failed with `reason` and return the body."""
    failed = wait_for_condition(kube_api, namespace, name, "Ready", "False",
                                operators=(operator,))
    exported = condition(failed, "Exported")
    assert exported["status"] == "False"
    assert exported["reason"] == reason
    assert condition(failed, "Ready")["reason"] == reason
    return failed


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
    wait_for_no_job(kube_api, namespace, "train", "the out-of-memory training Job to be deleted")


def test_unpullable_image_fails_after_grace_period(kube_api, operators):
    namespace = operators.namespace
    operator = operators.start("replica-a", "--image-pull-grace", IMAGE_PULL_GRACE)
    image = "registry.invalid/modelconv-stage:1"
    apply(kube_api, namespace, conversion("unpullable", stages={"export": {"image": image}}))

    failed = failed_at_export(kube_api, namespace, "unpullable", operator, "ImagePullFailed")
    message = condition(failed, "Exported")["message"]
    assert "registry.invalid" in message
    assert f"for {IMAGE_PULL_GRACE} s" in message
    assert failed["status"]["stage"] == "export"

    # The Job would wait for its image forever: the operator deletes it.
    wait_for_no_job(kube_api, namespace, "export",
                    "the export Job that cannot pull its image to be deleted")


def test_missing_store_secret_fails_after_grace_period(kube_api, operators):
    namespace = operators.namespace
    # The last --store-secret wins: a Secret that this namespace does not have.
    operator = operators.start("replica-a", "--image-pull-grace", IMAGE_PULL_GRACE,
                               "--store-secret", "absent-credentials")
    apply(kube_api, namespace, conversion("nosecret"))

    failed = failed_at_export(kube_api, namespace, "nosecret", operator, "ContainerConfigFailed")
    message = condition(failed, "Exported")["message"]
    assert "absent-credentials" in message
    assert "--store-secret" in message

    # The container would wait for the Secret forever: the operator deletes the Job.
    wait_for_no_job(kube_api, namespace, "export",
                    "the export Job without its Secret to be deleted")


def test_missing_stage_account_then_retry(kube_api, operators):
    namespace = operators.namespace
    operator = operators.start("replica-a", "--image-pull-grace", IMAGE_PULL_GRACE,
                               "--stage-service-account", "conversion-stages")
    apply(kube_api, namespace, conversion("noaccount"))

    # The ServiceAccount admission plugin rejects every pod of the Job.
    failed = failed_at_export(kube_api, namespace, "noaccount", operator, "PodNotCreated")
    message = condition(failed, "Exported")["message"]
    assert f"for {IMAGE_PULL_GRACE} s" in message
    assert "--stage-service-account" in message
    wait_for_no_job(kube_api, namespace, "export", "the export Job without pods to be deleted")

    # With the ServiceAccount in place, a retry runs every stage as it.
    kube_api.post(f"/api/v1/namespaces/{namespace}/serviceaccounts", {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "conversion-stages"}, "automountServiceAccountToken": False})
    request_retry(kube_api, namespace, "noaccount")
    done = wait_for_condition(kube_api, namespace, "noaccount", "Ready", "True",
                              operators=(operator,))
    assert condition(done, "Published")["status"] == "True"
    pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    assert pods
    assert {pod["spec"]["serviceAccountName"] for pod in pods} == {"conversion-stages"}
