"""Restart safety and leader election of the operator, on the real control plane.

A killed operator (SIGKILL, no cleanup) restarts from what the cluster and the store hold:
it adopts the Jobs it made instead of creating twins, and every conversion finishes. Two
replicas share the work through a Lease: one reconciles, the other takes over when the
leader dies or steps down.
"""

from __future__ import annotations

import secrets

from operator_harness import apply, conversion, jobs_of, stage_of, wait_for_condition, wait_for_job
from testenv.api import ApiError, KubeAPI
from testenv.processes import wait_until

STAGES = ("export", "convert", "validate", "publish")
TAKEOVER_TIMEOUT = 90.0


def assert_one_job_per_stage(api: KubeAPI, namespace: str, body: dict) -> None:
    uid = body["metadata"]["uid"]
    jobs = [job for job in jobs_of(api, namespace)
            if job["metadata"]["labels"]["modelconv.io/conversion-uid"] == uid]
    assert sorted(stage_of(job) for job in jobs) == sorted(STAGES), [
        job["metadata"]["name"] for job in jobs]
    for job in jobs:
        assert job["status"].get("succeeded") == 1, job["metadata"]["name"]
        assert not job["status"].get("failed"), job["metadata"]["name"]
    for stage in STAGES:
        assert body["status"]["stages"][stage]["attempts"] == 1, stage


def lease_holder(api: KubeAPI, namespace: str, name: str) -> str:
    try:
        lease = api.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
    except ApiError as error:
        if error.status == 404:
            return ""
        raise
    return lease["spec"].get("holderIdentity") or ""


def test_killed_operator_makes_no_twin_jobs(kube_api, operators):
    namespace = operators.namespace
    operator = operators.start("replica-a")
    apply(kube_api, namespace, conversion("first", width=9))
    apply(kube_api, namespace, conversion("second", width=10))

    # Kill the operator right after it created a Job, while one is running, and as the
    # next stage starts; a restart in the same pod keeps the replica's identity.
    wait_for_job(kube_api, namespace, "export")
    operator.kill()
    operator = operators.start("replica-a")
    wait_for_job(kube_api, namespace, "export",
                 where=lambda job: (job.get("status") or {}).get("active", 0) > 0)
    operator.kill()
    operator = operators.start("replica-a")
    wait_for_job(kube_api, namespace, "convert")
    operator.kill()
    operator = operators.start("replica-a")
    wait_for_job(kube_api, namespace, "validate")
    operator.kill()
    operator = operators.start("replica-a")

    for name in ("first", "second"):
        done = wait_for_condition(kube_api, namespace, name, "Ready", "True",
                                  operators=(operator,))
        assert_one_job_per_stage(kube_api, namespace, done)


def test_standby_takes_over_killed_leader(kube_api, operators):
    namespace = operators.namespace
    replicas = {"replica-a": operators.start("replica-a"),
                "replica-b": operators.start("replica-b")}
    wait_until(lambda: lease_holder(kube_api, namespace, operators.lease_name) in replicas,
               TAKEOVER_TIMEOUT, "a replica to hold the Lease")
    leader = lease_holder(kube_api, namespace, operators.lease_name)
    (standby,) = [name for name in replicas if name != leader]

    apply(kube_api, namespace, conversion("shared", width=11))
    wait_for_job(kube_api, namespace, "export")
    assert "became the leader" not in replicas[standby].log_text()
    replicas[leader].kill()

    wait_until(lambda: lease_holder(kube_api, namespace, operators.lease_name) == standby,
               TAKEOVER_TIMEOUT, f"{standby} to take the Lease over")
    done = wait_for_condition(kube_api, namespace, "shared", "Ready", "True",
                              operators=(replicas[standby],))
    assert "became the leader" in replicas[standby].log_text()
    assert_one_job_per_stage(kube_api, namespace, done)


def test_stopped_leader_releases_the_lease(kube_api, operators):
    namespace = operators.namespace
    first = operators.start("replica-a")
    wait_until(lambda: lease_holder(kube_api, namespace, operators.lease_name) == "replica-a",
               TAKEOVER_TIMEOUT, "replica-a to hold the Lease")
    second = operators.start("replica-b")

    assert first.stop() == 0
    assert "released the Lease" in first.log_text()
    wait_until(lambda: lease_holder(kube_api, namespace, operators.lease_name) == "replica-b",
               TAKEOVER_TIMEOUT, "replica-b to take the released Lease")
    assert second.running()


def test_operator_account_has_only_its_rules(kube_api, operators):
    service_account = KubeAPI.from_kubeconfig(operators.kubeconfig)
    namespace = operators.namespace

    def allowed(verb: str, resource: str, group: str = "", subresource: str = "") -> bool:
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"namespace": namespace, "verb": verb,
                                                  "group": group, "resource": resource,
                                                  "subresource": subresource}}}
        answer = service_account.post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
        return answer["status"]["allowed"]

    try:
        assert allowed("create", "jobs", "batch")
        assert allowed("watch", "modelconversions", "modelconv.io")
        assert allowed("patch", "modelconversions", "modelconv.io", "status")
        assert allowed("create", "events")
        assert not allowed("get", "secrets")
        assert not allowed("list", "secrets")
        assert not allowed("update", "jobs", "batch")
        assert not allowed("delete", "modelconversions", "modelconv.io")
        assert not allowed("create", "pods")
        assert not allowed("list", "namespaces")
    finally:
        service_account.close()


def test_unusable_lease_namespace_exits_2(operators):
    # The operator's ServiceAccount has the Lease rules in its own namespace only.
    operator = operators.start("replica-a", "--lease-namespace", "absent-lease-namespace")
    wait_until(lambda: not operator.running(), 60, "the operator to exit")
    log = operator.log_text()
    assert operator.popen.returncode == 2, log
    assert "cannot take the Lease absent-lease-namespace/" in log
    assert "403" in log
    assert "Traceback" not in log


def test_namespace_without_rights_exits_2(operators):
    # The operator's ServiceAccount has rules in its own namespace only.
    unwatched = f"unwatched-{secrets.token_hex(4)}"
    operator = operators.start("replica-a", "--namespace", unwatched)
    wait_until(lambda: not operator.running(), 60, "the operator to exit")
    log = operator.log_text()
    assert operator.popen.returncode == 2, log
    assert f"the operator may not list modelconversions in namespace {unwatched}" in log
    assert f"may not list jobs in namespace {unwatched}" in log
    assert f"may not list modelconversions in namespace {operators.namespace}" not in log
    assert "Traceback" not in log
