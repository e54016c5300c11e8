"""Pods and Jobs really run on the node agent: Jobs complete, fail and retry through
kube-controller-manager's Job controller, and the agent survives its own restart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testenv import NodeAgentProcess
from testenv.api import ApiError, KubeAPI
from testenv.processes import wait_until

IMAGE = "python:3.11-slim"  # Ignored by the node agent: `python` is the virtualenv's.
# Each Job retry waits for the Job controller's back-off (10 s, then 20 s, ...).
JOB_TIMEOUT = 120.0
POD_TIMEOUT = 60.0


def _job(name: str, code: str, *, restart_policy: str = "Never", backoff_limit: int = 0,
         **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {
                "restartPolicy": restart_policy,
                "containers": [{"name": "main", "image": IMAGE,
                                "command": ["python", "-c", code]}],
            }},
            **spec,
        },
    }


def _pod(name: str, code: str, **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": IMAGE,
                            "command": ["python", "-c", code], **container}],
        },
    }


def _wait_for_job(api: KubeAPI, namespace: str, name: str, condition: str) -> dict[str, Any]:
    """Wait until the Job has `condition` True; fail early when it ends the other way."""
    path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(api.get(path))
        conditions = {c["type"]: c for c in (found.get("status") or {}).get("conditions") or []}
        for end in ("Complete", "Failed"):
            if end != condition and conditions.get(end, {}).get("status") == "True":
                pytest.fail(f"Job {name} ended {end}, expected {condition}: {found['status']}")
        return conditions.get(condition, {}).get("status") == "True"

    wait_until(reached, JOB_TIMEOUT, f"Job {namespace}/{name} to be {condition}")
    return found


def _wait_for_pod(api: KubeAPI, namespace: str, name: str, *phases: str) -> dict[str, Any]:
    path = f"/api/v1/namespaces/{namespace}/pods/{name}"
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(api.get(path))
        return (found.get("status") or {}).get("phase") in phases

    wait_until(reached, POD_TIMEOUT, f"pod {namespace}/{name} to be {' or '.join(phases)}")
    return found


def _job_pods(api: KubeAPI, namespace: str, job: str) -> list[dict[str, Any]]:
    pods = api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=f"job-name={job}")
    return pods["items"]


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["status"]["containerStatuses"][0]["state"]["terminated"]


def _pod_gone(api: KubeAPI, namespace: str, name: str) -> bool:
    try:
        api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    except ApiError as error:
        if error.status == 404:
            return True
        raise
    return False


def _group_alive(pgid: int) -> bool:
    """Return whether a process of group `pgid` still runs; zombies do not count."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # The process ended while the folder was listed.
        state, _parent, group = text[text.rindex(")") + 2:].split()[:3]
        if int(group) == pgid and state != "Z":
            return True
    return False


def test_node_is_ready_with_lease(kube_api: KubeAPI, node_agent: NodeAgentProcess) -> None:
    node = kube_api.get(f"/api/v1/nodes/{node_agent.node_name}")
    lease = kube_api.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"
                         f"{node_agent.node_name}")
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}

    assert conditions["Ready"] == "True"
    assert lease["spec"]["holderIdentity"] == node_agent.node_name
    assert not node["spec"].get("taints")


def test_job_runs_to_completion(kube_api: KubeAPI, namespace: str,
                                node_agent: NodeAgentProcess) -> None:
    code = ("import sys; print('converted', sys.argv); "
            "open('/dev/termination-log', 'w').write('stage done')")
    kube_api.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", _job("hello", code))

    job = _wait_for_job(kube_api, namespace, "hello", "Complete")
    [pod] = _job_pods(kube_api, namespace, "hello")
    terminated = _terminated(pod)

    assert job["status"]["succeeded"] == 1
    assert pod["status"]["phase"] == "Succeeded"
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert terminated["message"] == "stage done"
    assert "converted" in node_agent.container_log(namespace, pod["metadata"]["name"])


def test_failing_job_retries_to_backoff_limit(kube_api: KubeAPI, namespace: str,
                                                    node_agent: NodeAgentProcess) -> None:
    job = _job("flaky", "import sys; sys.exit(3)", backoff_limit=2)
    kube_api.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)

    finished = _wait_for_job(kube_api, namespace, "flaky", "Failed")
    conditions = {c["type"]: c for c in finished["status"]["conditions"]}
    pods = _job_pods(kube_api, namespace, "flaky")

    assert conditions["Failed"]["reason"] == "BackoffLimitExceeded"
    assert finished["status"]["failed"] == 3
    assert len(pods) == 3
    assert {_terminated(pod)["exitCode"] for pod in pods} == {3}


def test_pod_failure_policy_fails_job_on_exit_code(kube_api: KubeAPI, namespace: str,
                                                   node_agent: NodeAgentProcess) -> None:
    policy = {"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In",
                                              "values": [2]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    ]}
    job = _job("permanent", "import sys; sys.exit(2)", backoff_limit=6, podFailurePolicy=policy)
    kube_api.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)

    finished = _wait_for_job(kube_api, namespace, "permanent", "Failed")
    conditions = {c["type"]: c for c in finished["status"]["conditions"]}

    assert conditions["Failed"]["reason"] == "PodFailurePolicy"
    assert finished["status"]["failed"] == 1
    assert len(_job_pods(kube_api, namespace, "permanent")) == 1


def test_evicted_pod_is_ignored_by_policy(kube_api: KubeAPI, namespace: str,
                                          node_agent: NodeAgentProcess, tmp_path: Path) -> None:
    # The first pod waits for the release file; it is evicted before the file exists.
    code = ("import os, sys, time\n"
            "while not os.path.exists(sys.argv[1]):\n"
            "    time.sleep(0.05)")
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    job = _job("evicted", code, backoff_limit=0, podFailurePolicy=policy)
    job["spec"]["template"]["spec"]["containers"][0]["args"] = [str(tmp_path / "release")]
    job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 2
    kube_api.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
    wait_until(lambda: len(_job_pods(kube_api, namespace, "evicted")) == 1, POD_TIMEOUT,
               "the Job's first pod")
    [first] = _job_pods(kube_api, namespace, "evicted")
    name = first["metadata"]["name"]
    _wait_for_pod(kube_api, namespace, name, "Running")

    kube_api.post(f"/api/v1/namespaces/{namespace}/pods/{name}/eviction", {
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
    })
    wait_until(lambda: _pod_gone(kube_api, namespace, name), POD_TIMEOUT,
               "the evicted pod to be deleted")
    (tmp_path / "release").touch()
    finished = _wait_for_job(kube_api, namespace, "evicted", "Complete")
    [second] = _job_pods(kube_api, namespace, "evicted")

    assert second["metadata"]["name"] != name
    assert finished["status"]["succeeded"] == 1
    assert finished["status"].get("failed", 0) == 0


def test_on_failure_job_restarts_in_place(kube_api: KubeAPI, namespace: str,
                                                    node_agent: NodeAgentProcess) -> None:
    # The emptyDir outlives the first attempt, so the second one finds the marker and succeeds.
    code = ("import os, sys; marker = '/scratch/attempted'; "
            "first = not os.path.exists(marker); open(marker, 'w').close(); "
            "sys.exit(1 if first else 0)")
    job = _job("second-time-lucky", code, restart_policy="OnFailure", backoff_limit=3)
    template = job["spec"]["template"]["spec"]
    template["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    template["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    kube_api.post(f"/apis/batch/v1/namespaces/{namespace}/jobs", job)

    _wait_for_job(kube_api, namespace, "second-time-lucky", "Complete")
    [pod] = _job_pods(kube_api, namespace, "second-time-lucky")
    status = pod["status"]["containerStatuses"][0]

    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["exitCode"] == 0


def test_pod_env_and_files_from_configmaps(
    kube_api: KubeAPI, namespace: str, node_agent: NodeAgentProcess
) -> None:
    core = f"/api/v1/namespaces/{namespace}"
    kube_api.post(f"{core}/configmaps", {"metadata": {"name": "run-spec"},
                                         "data": {"run.json": '{"stage": "convert"}',
                                                  "STAGE": "convert"}})
    kube_api.post(f"{core}/secrets", {"metadata": {"name": "store"},
                                      "stringData": {"token": "s3cr3t"}})
    code = ("import json, os; spec = json.load(open('/etc/modelconv/run.json')); "
            "print(spec['stage'], os.environ['CFG_STAGE'], os.environ['TOKEN'], "
            "os.environ['POD'], os.environ['GREETING'], os.getcwd())")
    pod = _pod("env-and-files", code, workingDir="/srv/work", envFrom=[
        {"prefix": "CFG_", "configMapRef": {"name": "run-spec"}},
    ], env=[
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "store", "key": "token"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "GREETING", "value": "hello $(POD)"},
    ], volumeMounts=[{"name": "spec", "mountPath": "/etc/modelconv"}])
    pod["spec"]["volumes"] = [{"name": "spec", "configMap": {"name": "run-spec"}}]
    kube_api.post(f"{core}/pods", pod)

    finished = _wait_for_pod(kube_api, namespace, "env-and-files", "Succeeded", "Failed")
    output = node_agent.container_log(namespace, "env-and-files").split()

    assert finished["status"]["phase"] == "Succeeded", finished["status"]
    assert output[:6] == ["convert", "convert", "s3cr3t", "env-and-files", "hello",
                          "env-and-files"]
    assert output[6].endswith("/rootfs/srv/work")


def test_fallback_to_logs_reports_log_tail(kube_api: KubeAPI, namespace: str,
                                                    node_agent: NodeAgentProcess) -> None:
    code = "import sys; print('unsupported op: new_ones', file=sys.stderr); sys.exit(5)"
    pod = _pod("fails-loudly", code, terminationMessagePolicy="FallbackToLogsOnError")
    kube_api.post(f"/api/v1/namespaces/{namespace}/pods", pod)

    finished = _wait_for_pod(kube_api, namespace, "fails-loudly", "Succeeded", "Failed")
    terminated = _terminated(finished)

    assert finished["status"]["phase"] == "Failed"
    assert terminated["exitCode"] == 5
    assert terminated["reason"] == "Error"
    assert terminated["message"].strip() == "unsupported op: new_ones"


def test_missing_configmap_keeps_pod_waiting(kube_api: KubeAPI, namespace: str,
                                                   node_agent: NodeAgentProcess) -> None:
    pod = _pod("needs-config", "print('never')",
               envFrom=[{"configMapRef": {"name": "not-created"}}])
    kube_api.post(f"/api/v1/namespaces/{namespace}/pods", pod)
    path = f"/api/v1/namespaces/{namespace}/pods/needs-config"
    waiting: dict[str, Any] = {}

    def reported() -> bool:
        statuses = (kube_api.get(path).get("status") or {}).get("containerStatuses") or []
        waiting.update(statuses[0]["state"].get("waiting") or {} if statuses else {})
        return waiting.get("reason") == "CreateContainerConfigError"

    wait_until(reported, POD_TIMEOUT, "the container to report CreateContainerConfigError")

    assert "not-created" in waiting["message"]
    assert kube_api.get(path)["status"]["phase"] == "Pending"


def test_active_deadline_stops_pod(kube_api: KubeAPI, namespace: str,
                                   node_agent: NodeAgentProcess) -> None:
    pod = _pod("overdue", "import time; time.sleep(300)")
    pod["spec"]["activeDeadlineSeconds"] = 2
    kube_api.post(f"/api/v1/namespaces/{namespace}/pods", pod)

    finished = _wait_for_pod(kube_api, namespace, "overdue", "Succeeded", "Failed")
    pgid = node_agent.container_pid(namespace, "overdue")

    assert finished["status"]["phase"] == "Failed"
    assert finished["status"]["reason"] == "DeadlineExceeded"
    assert _terminated(finished)["exitCode"] == 128 + 15  # SIGTERM
    assert not _group_alive(pgid)


def test_deleted_pod_process_is_killed(kube_api: KubeAPI, namespace: str,
                                                node_agent: NodeAgentProcess) -> None:
    kube_api.post(f"/api/v1/namespaces/{namespace}/pods",
                  _pod("long-runner", "import time; time.sleep(300)"))
    _wait_for_pod(kube_api, namespace, "long-runner", "Running")
    pgid = node_agent.container_pid(namespace, "long-runner")
    path = f"/api/v1/namespaces/{namespace}/pods/long-runner"

    kube_api.delete(path)

    wait_until(lambda: _pod_gone(kube_api, namespace, "long-runner"), POD_TIMEOUT,
               "the deleted pod to disappear")
    assert not _group_alive(pgid)


def test_agent_restart_adopts_pods(kube_api: KubeAPI, namespace: str,
                                   node_agent: NodeAgentProcess, tmp_path: Path) -> None:
    # Each pod runs until the test creates its release file, so the order of events is fixed.
    wait_for_release = ("import os, sys, time\n"
                        "while not os.path.exists(sys.argv[1]):\n"
                        "    time.sleep(0.05)\n"
                        "print('released', sys.argv[1])")
    pods = f"/api/v1/namespaces/{namespace}/pods"
    for name in ("short", "long"):
        pod = _pod(name, wait_for_release, args=[str(tmp_path / name)])
        kube_api.post(pods, pod)
    _wait_for_pod(kube_api, namespace, "short", "Running")
    _wait_for_pod(kube_api, namespace, "long", "Running")
    short_pid = node_agent.container_pid(namespace, "short")
    long_pid = node_agent.container_pid(namespace, "long")

    node_agent.crash()
    try:
        # "short" ends while no agent runs; "long" still runs when the new agent starts.
        (tmp_path / "short").touch()
        wait_until(lambda: not _group_alive(short_pid), POD_TIMEOUT, "the short pod to end")
        short_while_down = kube_api.get(f"{pods}/short")
    finally:
        node_agent.start()
    short = _wait_for_pod(kube_api, namespace, "short", "Succeeded", "Failed")
    long_adopted = kube_api.get(f"{pods}/long")
    (tmp_path / "long").touch()
    long = _wait_for_pod(kube_api, namespace, "long", "Succeeded", "Failed")

    assert short_while_down["status"]["phase"] == "Running"
    assert short["status"]["phase"] == "Succeeded"
    assert _terminated(short)["exitCode"] == 0
    assert long_adopted["status"]["phase"] == "Running"
    assert node_agent.container_pid(namespace, "long") == long_pid
    assert long["status"]["phase"] == "Succeeded"
    assert long["status"]["containerStatuses"][0]["restartCount"] == 0
    assert "released" in node_agent.container_log(namespace, "long")


def test_container_python_is_virtualenv_python(kube_api: KubeAPI, namespace: str,
                                                   node_agent: NodeAgentProcess) -> None:
    kube_api.post(f"/api/v1/namespaces/{namespace}/pods",
                  _pod("which-python", "import sys; print(sys.prefix)"))

    finished = _wait_for_pod(kube_api, namespace, "which-python", "Succeeded", "Failed")

    assert finished["status"]["phase"] == "Succeeded"
    assert node_agent.container_log(namespace, "which-python").strip() == sys.prefix



def test_memory_limit_ends_container_as_oomkilled(kube_api: KubeAPI, namespace: str,
                                                  node_agent: NodeAgentProcess) -> None:
    # Touches 256 MiB (bytes multiplication writes every page), then waits to be killed.
    code = "import time; block = b'x' * (256 * 2**20); time.sleep(120)"
    pod = _pod("greedy", code, resources={"limits": {"memory": "64Mi"}})
    kube_api.post(f"/api/v1/namespaces/{namespace}/pods", pod)

    finished = _wait_for_pod(kube_api, namespace, "greedy", "Succeeded", "Failed")
    pgid = node_agent.container_pid(namespace, "greedy")

    assert finished["status"]["phase"] == "Failed"
    assert _terminated(finished)["reason"] == "OOMKilled"
    assert _terminated(finished)["exitCode"] == 137
    assert not _group_alive(pgid)


def test_memory_within_limit_completes(kube_api: KubeAPI, namespace: str,
                                       node_agent: NodeAgentProcess) -> None:
    code = "import time; block = b'x' * (16 * 2**20); time.sleep(1)"
    pod = _pod("modest", code, resources={"limits": {"memory": "256Mi"}})
    kube_api.post(f"/api/v1/namespaces/{namespace}/pods", pod)

    finished = _wait_for_pod(kube_api, namespace, "modest", "Succeeded", "Failed")

    assert finished["status"]["phase"] == "Succeeded"
    assert _terminated(finished)["reason"] == "Completed"


def test_unpullable_image_keeps_pod_waiting(kube_api: KubeAPI, namespace: str,
                                            node_agent: NodeAgentProcess) -> None:
    image = "registry.invalid/team/app:1"
    pod = _pod("no-image", "print('never')", image=image)
    created = kube_api.post(f"/api/v1/namespaces/{namespace}/pods", pod)
    path = f"/api/v1/namespaces/{namespace}/pods/no-image"
    reasons: dict[str, str] = {}

    # A watch delivers every status the agent writes; polling could miss the short
    # ErrImagePull between two syncs on a busy machine.
    events = kube_api.watch(f"/api/v1/namespaces/{namespace}/pods",
                            created["metadata"]["resourceVersion"], int(POD_TIMEOUT),
                            fieldSelector="metadata.name=no-image")
    for event in events:
        statuses = (event["object"].get("status") or {}).get("containerStatuses") or []
        waiting = statuses[0]["state"].get("waiting") or {} if statuses else {}
        if waiting.get("reason"):
            reasons[waiting["reason"]] = waiting.get("message") or ""
        if {"ErrImagePull", "ImagePullBackOff"} <= set(reasons):
            break
    events.close()

    assert {"ErrImagePull", "ImagePullBackOff"} <= set(reasons), reasons

    assert "registry.invalid" in reasons["ErrImagePull"]
    assert image in reasons["ImagePullBackOff"]
    assert set(reasons) <= {"ContainerCreating", "ErrImagePull", "ImagePullBackOff"}
    current = kube_api.get(path)
    assert current["status"]["phase"] == "Pending"
    assert current["status"]["containerStatuses"][0]["restartCount"] == 0


def _mount_namespaces_allowed() -> bool:
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


SELF_REVIEW = """
import json, os, ssl, urllib.request
folder = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{folder}/token").read()
namespace = open(f"{folder}/namespace").read()
context = ssl.create_default_context(cafile=f"{folder}/ca.crt")
url = ("https://" + os.environ["KUBERNETES_SERVICE_HOST"] + ":"
       + os.environ["KUBERNETES_SERVICE_PORT"]
       + "/apis/authentication.k8s.io/v1/selfsubjectreviews")
body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
request = urllib.request.Request(url, data=body.encode(), method="POST", headers={
    "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
review = json.load(urllib.request.urlopen(request, context=context))
print(namespace, review["status"]["userInfo"]["username"])
"""


@pytest.mark.skipif(not _mount_namespaces_allowed(),
                    reason="the agent needs CAP_SYS_ADMIN to mount the token at its fixed path")
def test_service_account_token_is_at_its_fixed_path(kube_api: KubeAPI, namespace: str,
                                                    node_agent: NodeAgentProcess) -> None:
    host_folder = Path("/var/run/secrets/kubernetes.io/serviceaccount")
    existed = host_folder.exists()
    # No volume of its own: the API server's ServiceAccount admission adds the token volume.
    kube_api.post(f"/api/v1/namespaces/{namespace}/pods", _pod("in-cluster", SELF_REVIEW))

    finished = _wait_for_pod(kube_api, namespace, "in-cluster", "Succeeded", "Failed")
    log = node_agent.container_log(namespace, "in-cluster", "main")

    assert finished["status"]["phase"] == "Succeeded", log
    assert f"{namespace} system:serviceaccount:{namespace}:default" in log
    # The mount stays inside the container's namespace: the host's folders are unchanged.
    assert host_folder.exists() == existed
