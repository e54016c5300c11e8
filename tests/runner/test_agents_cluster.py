"""`modelconv agent` processes against the real control plane and the real S3 server.

Agents run the mil-reference backend in child processes with the kubeconfig of a
ServiceAccount bound to the agent Role of examples/macos/agent-rbac.yaml, exactly as a Mac
would. The controller side is the same `evaluate_check` the operator calls, run by the test.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys

from runner_fixtures import (
    AGENT_ENTRY,
    URL_SECRETS,
    AgentProcess,
    CheckEventRecorder,
    broken_package_zip,
    manifest_for,
    upload_check_objects,
    wait_for,
)

from modelconv.runner.artifacts import write_samples
from modelconv.runner.checks import create_check, evaluate_check, live_runners
from modelconv.runner.kube import CheckApi, LeaseApi
from modelconv.runner.resource import status_of, utc_now

# Predictions of the slow model take about 1.3 ms each with the executor on one idle core,
# and more on a busy machine. So a thousand keep a runner busy for a second or more, which
# is long enough for a test polling every 50 ms to catch the runner mid-check.
SLOW_RUNS = 1000


def _create(pool, s3_store, objects, run: str, edit=None, **settings) -> str:
    objects = dataclasses.replace(objects, report=f"reports/{run}.json",
                                  compiled_model=f"reports/{run}.mlmodelc.zip")
    manifest = manifest_for(s3_store, objects, pool.namespace, run, **settings)
    if edit:
        edit(manifest["spec"])
    return create_check(pool.client, manifest)["metadata"]["name"]


def _status(pool, name: str):
    return status_of(CheckApi(pool.client, pool.namespace).get(name))


def _all_final(pool, names: list[str]) -> bool:
    return all(_status(pool, name).state in ("Succeeded", "Failed") for name in names)


def _assert_no_secrets(text: str, where: str) -> None:
    for secret in URL_SECRETS:
        assert secret not in text, f"{where} contains {secret!r}"


def test_several_agents_run_every_check_exactly_once(pool, s3_store, tiny_model, tmp_path):
    objects = upload_check_objects(s3_store, "many", tiny_model.package_zip,
                                   tiny_model.samples_safetensors)
    recorder = CheckEventRecorder(pool.client, pool.namespace)
    agents = [AgentProcess(pool, f"linux-{index}", tmp_path, concurrency=2)
              for index in range(3)]
    try:
        # All agents are watching before the first check appears, so they all compete.
        wait_for(lambda: len(live_runners(pool.client, pool.namespace)) == 3, 180,
                 "the three agents to register")
        names = [_create(pool, s3_store, objects, f"many{index:02d}", measured_runs=50)
                 for index in range(24)]
        wait_for(lambda: _all_final(pool, names), 240, "all 24 checks to finish")
    finally:
        codes = [agent.stop() for agent in agents]
        recorder.stop()
    assert codes == [0, 0, 0]

    logs = {agent.name: agent.log() for agent in agents}
    for name in names:
        status = _status(pool, name)
        assert status.state == "Succeeded", f"{name}: {status.reason}: {status.message}"
        assert status.attempts == 1
        assert status.runner in logs
        assert [result.backend for result in status.results] == ["mil-reference"]
        assert recorder.writes_in_state(name, "Succeeded") == 1
        finished = sum(log.count(f"finished check {name}:") for log in logs.values())
        assert finished == 1, f"{name} finished {finished} times"
        report = json.loads(s3_store.get_bytes(status.report))
        assert report["check"]["name"] == name
        assert report["runner"]["name"] == status.runner
    for agent in agents:
        assert recorder.max_claimed(agent.name) <= 2
        _assert_no_secrets(logs[agent.name], f"log of {agent.name}")
    # More than one agent did work, or the test proves nothing about coordination.
    assert len({_status(pool, name).runner for name in names}) > 1


def test_no_result_on_linux_claims_the_coreml_backend(pool, s3_store, tiny_model, tmp_path):
    objects = upload_check_objects(s3_store, "linux", tiny_model.package_zip,
                                   tiny_model.samples_safetensors)
    names = [_create(pool, s3_store, objects, f"linux{index}") for index in range(3)]
    agent = AgentProcess(pool, "linux-only", tmp_path)
    try:
        wait_for(lambda: _all_final(pool, names), 120, "the checks to finish")
    finally:
        agent.stop()
    for name in names:
        status = _status(pool, name)
        assert status.results, f"{name} has no results"
        assert all(result.backend != "coreml" for result in status.results)
        evaluation = evaluate_check(pool.client, pool.namespace, name)
        assert evaluation.state == "Succeeded"
        assert not evaluation.device_verified


def test_failed_checks_name_their_reason(pool, s3_store, tiny_model, tmp_path):
    good = upload_check_objects(s3_store, "good", tiny_model.package_zip,
                                tiny_model.samples_safetensors)
    broken = upload_check_objects(s3_store, "broken", broken_package_zip(),
                                  tiny_model.samples_safetensors)
    shifted = [{"y": sample["y"] + 1.0} for sample in tiny_model.outputs]
    off = upload_check_objects(s3_store, "off", tiny_model.package_zip,
                               tiny_model.samples_safetensors, write_samples(shifted))
    past = utc_now().isoformat()

    def expire_inputs(spec: dict) -> None:
        spec["inputs"]["expiresAt"] = past

    expected = {
        _create(pool, s3_store, good, "expired", edit=expire_inputs): "UrlExpired",
        _create(pool, s3_store, broken, "broken"): "PackageLoadFailed",
        _create(pool, s3_store, off, "off"): "ToleranceExceeded",
    }
    agent = AgentProcess(pool, "linux-failures", tmp_path)
    try:
        wait_for(lambda: _all_final(pool, list(expected)), 120, "the checks to finish")
    finally:
        agent.stop()
    for name, reason in expected.items():
        status = _status(pool, name)
        assert status.state == "Failed"
        assert status.reason == reason, f"{name}: {status.reason}: {status.message}"
        assert status.message
        _assert_no_secrets(json.dumps(status.document()), f"status of {name}")
    tolerance = _status(pool, [name for name, reason in expected.items()
                               if reason == "ToleranceExceeded"][0])
    assert tolerance.results[0].max_abs_error > 0.9
    assert "exceeds atol" in tolerance.results[0].message


def test_killed_agent_check_is_finished_by_another(pool, s3_store, slow_model, tmp_path):
    objects = upload_check_objects(s3_store, "kill", slow_model.package_zip,
                                   slow_model.samples_safetensors)
    name = _create(pool, s3_store, objects, "kill", measured_runs=SLOW_RUNS)
    first = AgentProcess(pool, "runner-a", tmp_path)
    wait_for(lambda: _status(pool, name).runner == "runner-a", 120, "runner-a to claim",
             interval=0.05)
    first.signal(signal.SIGKILL)
    first.wait()
    assert _status(pool, name).state == "Claimed", "runner-a finished before it was killed"

    requeue = wait_for(
        lambda: (evaluation := evaluate_check(pool.client, pool.namespace, name)).state
        == "Requeued" and evaluation, 60, "the controller side to requeue the check")
    assert "runner runner-a sent no heartbeat" in requeue.message
    second = AgentProcess(pool, "runner-b", tmp_path)
    try:
        wait_for(lambda: _all_final(pool, [name]), 180, "runner-b to finish the check")
    finally:
        assert second.stop() == 0
    status = _status(pool, name)
    assert status.state == "Succeeded"
    assert status.runner == "runner-b"
    assert status.attempts == 2


def test_paused_agent_late_result_is_rejected(pool, s3_store, slow_model, tmp_path):
    objects = upload_check_objects(s3_store, "pause", slow_model.package_zip,
                                   slow_model.samples_safetensors)
    name = _create(pool, s3_store, objects, "pause", measured_runs=SLOW_RUNS)
    paused = AgentProcess(pool, "runner-sleepy", tmp_path)
    other = None
    try:
        wait_for(lambda: _status(pool, name).runner == "runner-sleepy", 120, "the first claim",
                 interval=0.05)
        paused.signal(signal.SIGSTOP)
        assert _status(pool, name).state == "Claimed", "the runner finished before the pause"
        wait_for(lambda: evaluate_check(pool.client, pool.namespace, name).state == "Requeued",
                 60, "the requeue of the paused runner's check")
        other = AgentProcess(pool, "runner-awake", tmp_path)
        wait_for(lambda: _all_final(pool, [name]), 180, "runner-awake to finish the check")
        settled = CheckApi(pool.client, pool.namespace).get(name)

        # The paused runner wakes up with its claim still in memory.
        paused.signal(signal.SIGCONT)
        wait_for(lambda: f"check {name}: check {name} is no longer claimed" in paused.log()
                 or f"result of check {name} rejected" in paused.log(),
                 120, "the woken runner to find its claim lost")
    finally:
        paused.signal(signal.SIGCONT)
        paused.stop()
        if other:
            other.stop()
    after = CheckApi(pool.client, pool.namespace).get(name)
    assert after["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]
    assert status_of(after).runner == "runner-awake"


def test_sigterm_releases_unfinished_checks(pool, s3_store, slow_model, tmp_path):
    objects = upload_check_objects(s3_store, "drain", slow_model.package_zip,
                                   slow_model.samples_safetensors)
    names = [_create(pool, s3_store, objects, f"drain{index}", measured_runs=SLOW_RUNS * 10)
             for index in range(2)]
    agent = AgentProcess(pool, "runner-drain", tmp_path, concurrency=2,
                         extra=("--drain-seconds", "0.5"))
    wait_for(lambda: all(_status(pool, name).state == "Claimed" for name in names), 120,
             "both claims")
    agent.signal(signal.SIGTERM)
    assert agent.wait(60) == 0
    for name in names:
        status = _status(pool, name)
        assert status.state == "Pending"
        assert status.attempts == 0
        assert status.runner is None
        assert status.message == "runner runner-drain stopped before finishing it"
    lease = LeaseApi(pool.client, pool.namespace).get("runner-drain")
    assert lease["spec"].get("holderIdentity") is None


def test_sigterm_lets_a_running_check_finish(pool, s3_store, slow_model, tmp_path):
    objects = upload_check_objects(s3_store, "finish", slow_model.package_zip,
                                   slow_model.samples_safetensors)
    name = _create(pool, s3_store, objects, "finish", measured_runs=SLOW_RUNS)
    agent = AgentProcess(pool, "runner-finish", tmp_path, extra=("--drain-seconds", "120"))
    wait_for(lambda: _status(pool, name).state == "Claimed", 120, "the claim")
    agent.signal(signal.SIGTERM)
    assert agent.wait(150) == 0
    assert _status(pool, name).state == "Succeeded"
    assert "draining: waiting up to" in agent.log()


def test_runners_command_lists_live_agents(pool, tmp_path):
    agents = [AgentProcess(pool, f"mac-{index}", tmp_path, concurrency=2) for index in range(2)]
    argv = [sys.executable, "-c", AGENT_ENTRY, "runners", "--kubeconfig",
            str(pool.admin_kubeconfig), "-n", pool.namespace]
    try:
        leases = LeaseApi(pool.client, pool.namespace)
        wait_for(lambda: all(_lease_exists(leases, agent.name) for agent in agents), 120,
                 "both agents to register")
        rows = json.loads(subprocess.run([*argv, "--output", "json"], capture_output=True,
                                         text=True, check=True, timeout=60).stdout)
        table = subprocess.run(argv, capture_output=True, text=True, check=True,
                               timeout=60).stdout
    finally:
        for agent in agents:
            agent.stop()
    assert [row["name"] for row in rows] == ["mac-0", "mac-1"]
    for row in rows:
        assert row["live"] is True
        assert row["backend"] == "mil-reference"
        assert row["labels"] == {"chip": "cpu", "macos": "15"}
        assert row["concurrency"] == 2
        assert row["checksInFlight"] == []
    assert table.splitlines()[0].split() == ["NAME", "BACKEND", "LABELS", "LIVE", "LAST",
                                             "RENEWAL", "IN", "FLIGHT"]
    assert "chip=cpu,macos=15" in table
    stopped = LeaseApi(pool.client, pool.namespace).get("mac-0")
    assert stopped["spec"].get("holderIdentity") is None


def _lease_exists(leases: LeaseApi, name: str) -> bool:
    from modelconv.runner.kube import NotFound

    try:
        leases.get(name)
    except NotFound:
        return False
    return True


def test_runners_command_names_empty_pool(pool):
    argv = [sys.executable, "-c", AGENT_ENTRY, "runners", "--kubeconfig",
            str(pool.admin_kubeconfig), "-n", "default"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout == ""
    assert "no runners in namespace default" in result.stderr
    assert "--pool-namespace" in result.stderr
    assert "Pass it with -n" in result.stderr


def test_agent_in_missing_namespace_exits_with_message(pool, tmp_path):
    argv = [sys.executable, "-c", AGENT_ENTRY, "agent", "--kubeconfig",
            str(pool.admin_kubeconfig), "--namespace", "no-such-pool", "--name", "lost",
            "--backend", "mil-reference", "--workdir", str(tmp_path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "namespace no-such-pool not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_agent_outside_its_role_exits_with_hint(pool, tmp_path):
    argv = [sys.executable, "-c", AGENT_ENTRY, "agent", "--kubeconfig",
            str(pool.agent_kubeconfig), "--namespace", "default", "--name", "astray",
            "--backend", "mil-reference", "--workdir", str(tmp_path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "403 Forbidden: the ServiceAccount lacks a permission" in result.stderr
    assert "Traceback" not in result.stderr
