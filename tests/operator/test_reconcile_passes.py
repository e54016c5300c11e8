"""Passes of `reconcile` over recorded cluster states, without a cluster.

The API client and the store are replaced by in-memory recorders, so these tests see every
write a pass makes; the real API server and store are covered by the cluster tests.
"""

from __future__ import annotations

import asyncio
import datetime

import pytest

from modelconv.controller import jobs as manifests
from modelconv.controller.config import OperatorConfig
from modelconv.controller.kube import ApiError
from modelconv.controller.metrics import OperatorMetrics
from modelconv.controller.observe import job_projection
from modelconv.controller.reconcile import Controller, reconcile
from modelconv.plan import plan_run
from modelconv.spec import ConversionSpec

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
STAGES = ("export", "convert", "validate", "publish")


class RecordingKube:
    """Records writes; creating an existing name raises 409, as the API server does."""

    def __init__(self) -> None:
        self.created: list[dict] = []
        self.deleted: list[str] = []
        self.patches: list[tuple[str, list]] = []
        self.existing: set[str] = set()

    async def create(self, path: str, body: dict) -> dict:
        name = body["metadata"]["name"]
        if name in self.existing:
            raise ApiError(409, "AlreadyExists", f"{name} exists", "POST", path)
        self.existing.add(name)
        self.created.append(body)
        return body

    async def get(self, path: str, **params) -> dict:
        # Reads find nothing, as in a cluster without the CoreMLCheck CRD.
        raise ApiError(404, "NotFound", f"{path} not found", "GET", path)

    async def delete(self, path: str, *, propagation: str = "Background") -> dict:
        self.deleted.append(path.rsplit("/", 1)[-1])
        return {}

    async def json_patch(self, path: str, operations: list) -> dict:
        self.patches.append((path, operations))
        return {}

    def jobs_created(self) -> list[str]:
        return [body["metadata"]["name"] for body in self.created if body["kind"] == "Job"]


class StoreResults:
    """Stage results by key, as the store cache would hold them."""

    def __init__(self) -> None:
        self.results: dict[tuple[str, str], dict] = {}

    async def result(self, store: str, stage: str, key: str):
        return self.results.get((stage, key))

    def store(self, url: str) -> object:
        # No S3 store, so the device stage finds that it cannot presign URLs.
        return object()

    async def source_version(self, spec) -> str:
        return ""


def body(spec_changes: dict | None = None, generation: int = 1, status: dict | None = None):
    spec = {
        "source": {"factory": {"entrypoint": "tests.operator.factories:mlp"}},
        "inputs": [{"name": "x", "shape": [1, 4]}],
        "outputs": [{"name": "logits"}],
        "publish": {"model": "mlp", "version": "1.0.0"},
    }
    spec.update(spec_changes or {})
    return {"apiVersion": "modelconv.io/v1alpha1", "kind": "ModelConversion",
            "metadata": {"name": "mlp", "namespace": "ns", "uid": "uid-1",
                         "generation": generation},
            "spec": spec, "status": status or {}}


@pytest.fixture
def controller():
    events = []
    ctl = Controller(OperatorConfig(store="s3://bucket/prefix"), RecordingKube(),
                     StoreResults(), OperatorMetrics(), lambda body, event: events.append(event))
    ctl.events = events
    return ctl


def run(ctl, conversion, jobs=(), pods=None):
    asyncio.run(reconcile(ctl, conversion, list(jobs), pods or {}, now=NOW))


def last_status(ctl) -> dict:
    return ctl.kube.patches[-1][1][0]["value"]


def finished_job(ctl, stage: str) -> dict:
    """Return the projection of the created Job of `stage`, marked complete."""
    (manifest,) = [item for item in ctl.kube.created
                   if item["kind"] == "Job" and item["metadata"]["labels"][
                       manifests.LABEL_STAGE] == stage]
    job = {**manifest, "metadata": {**manifest["metadata"], "uid": f"job-{stage}"},
           "status": {"succeeded": 1, "completionTime": "2026-01-01T11:59:00Z",
                      "conditions": [{"type": "Complete", "status": "True"}]}}
    return job_projection(job)


def test_first_pass_creates_config_map_and_job(controller):
    run(controller, body())
    kinds = [item["kind"] for item in controller.kube.created]
    assert kinds == ["ConfigMap", "Job"]
    status = last_status(controller)
    assert status["stages"]["export"]["state"] == "Running"
    assert status["stage"] == "export"
    assert [event.reason for event in controller.events] == ["Running"]


def test_second_pass_writes_nothing(controller):
    run(controller, body())
    writes = (len(controller.kube.created), len(controller.kube.patches))
    run(controller, body())
    assert (len(controller.kube.created), len(controller.kube.patches)) == writes


def test_finished_job_starts_next_stage(controller):
    run(controller, body())
    export = finished_job(controller, "export")
    key = last_status(controller)["stages"]["export"]["key"]
    controller.results.results[("export", key)] = {"succeeded": True, "message": "exported"}
    run(controller, body(), jobs=[export])
    assert controller.kube.jobs_created()[-1].startswith("mlp-convert-")
    status = last_status(controller)
    assert status["stages"]["export"]["state"] == "Succeeded"
    assert status["stages"]["convert"]["state"] == "Running"


def test_cached_stages_are_skipped_without_jobs(controller):
    run(controller, body())
    keys = {}
    plan_status = last_status(controller)
    keys["export"] = plan_status["stages"]["export"]["key"]
    controller.results.results[("export", keys["export"])] = {"succeeded": True}
    fresh = Controller(controller.config, RecordingKube(), controller.results,
                       OperatorMetrics(), lambda body, event: None)
    run(fresh, body())
    assert [name.split("-")[1] for name in fresh.kube.jobs_created()] == ["convert"]
    stages = last_status(fresh)["stages"]
    assert stages["export"] == {"key": keys["export"], "state": "Succeeded", "cacheHit": True}


def test_existing_job_is_adopted(controller):
    run(controller, body())
    (job_name,) = controller.kube.jobs_created()
    restarted = Controller(controller.config, controller.kube, controller.results,
                           OperatorMetrics(), lambda body, event: None)
    run(restarted, body(status=last_status(controller)))
    assert controller.kube.jobs_created() == [job_name]


def test_failed_stage_stops_the_run(controller):
    run(controller, body())
    export = finished_job(controller, "export")
    export["conditions"] = [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                             "message": "exit code 2"}]
    export["failed"], export["succeeded"] = 1, 0
    run(controller, body(), jobs=[export])
    status = last_status(controller)
    assert status["stages"]["export"]["state"] == "Failed"
    assert status["stage"] == "export"
    ready = [item for item in status["conditions"] if item["type"] == "Ready"][0]
    assert ready["status"] == "False"
    # The Job is gone (ttlSecondsAfterFinished), and the status still records the failure.
    run(controller, body())
    assert len(controller.kube.jobs_created()) == 1


def test_failure_reason_falls_back_to_the_stored_result(controller):
    run(controller, body())
    key = last_status(controller)["stages"]["export"]["key"]
    export = finished_job(controller, "export")
    export["conditions"] = [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                             "message": "exit code 2"}]
    export["failed"], export["succeeded"] = 1, 0
    controller.results.results[("export", key)] = {
        "succeeded": False, "reason": "InvalidModel", "message": "not a module"}
    run(controller, body(), jobs=[export])
    record = last_status(controller)["stages"]["export"]
    assert record["reason"] == "InvalidModel"
    assert record["message"] == "not a module"


def test_spec_change_supersedes_running_jobs(controller):
    run(controller, body())
    export = finished_job(controller, "export")
    export["conditions"], export["succeeded"], export["active"] = [], 0, 1
    run(controller, body({"coreml": {"precision": "float32"}}, generation=2), jobs=[export])
    assert export["name"] in controller.kube.deleted
    assert any(name.startswith("mlp-run-") for name in controller.kube.deleted)
    status = last_status(controller)
    assert status["observedGeneration"] == 2
    assert controller.kube.jobs_created()[-1] != export["name"]


def test_optional_device_check_stays_skipped(controller):
    conversion = body({"validation": {"device": {"enabled": True, "required": False}}})
    plan = plan_run(ConversionSpec.model_validate(conversion["spec"]),
                    job_settings=controller.config.job_settings())
    for stage in ("export", "convert", "validate"):
        controller.results.results[(stage, plan.stage(stage).key)] = {"succeeded": True}
    run(controller, conversion)
    status = last_status(controller)
    assert status["stages"]["device"]["state"] == "Skipped"
    assert status["stages"]["publish"]["state"] == "Running"
    writes = len(controller.kube.patches)
    later = NOW + datetime.timedelta(minutes=5)
    asyncio.run(reconcile(controller, conversion, [], {}, now=later))
    assert len(controller.kube.patches) == writes


def test_invalid_spec_is_reported_without_jobs(controller):
    run(controller, body({"source": {"factory": {"entrypoint": "m:f", "kwargs": {"a": {"b": 1}}}}}))
    assert controller.kube.created == []
    status = last_status(controller)
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert "kwargs" in ready["message"]


def test_spec_turned_invalid_deletes_the_run_config_map(controller):
    run(controller, body())
    export = finished_job(controller, "export")
    export["conditions"], export["succeeded"], export["active"] = [], 0, 1
    config_maps = [item["metadata"]["name"] for item in controller.kube.created
                   if item["kind"] == "ConfigMap"]
    invalid = {"source": {"factory": {"entrypoint": "m:f", "kwargs": {"a": {"b": 1}}}}}
    run(controller, body(invalid, generation=2), jobs=[export])
    assert export["name"] in controller.kube.deleted
    assert config_maps
    assert config_maps[0] in controller.kube.deleted
    assert last_status(controller)["conditions"][0]["reason"] == "InvalidSpec"


def test_missing_store_is_reported(controller):
    bare = Controller(OperatorConfig(), RecordingKube(), StoreResults(), OperatorMetrics(),
                      lambda body, event: None)
    run(bare, body())
    ready = last_status(bare)["conditions"][0]
    assert ready["reason"] == "StoreNotConfigured"
    assert "--store" in ready["message"]


def failed_job(ctl, stage: str) -> dict:
    """Return the projection of the created Job of `stage`, failed for good (exit code 2)."""
    job = finished_job(ctl, stage)
    job["conditions"] = [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                          "message": "exit code 2"}]
    job["failed"], job["succeeded"] = 1, 0
    return job


def with_retry(conversion: dict, value: str) -> dict:
    conversion["metadata"]["annotations"] = {"modelconv.io/retry": value}
    return conversion


def test_retry_annotation_restarts_a_failed_run(controller):
    run(controller, body())
    export = finished_job(controller, "export")
    key = last_status(controller)["stages"]["export"]["key"]
    controller.results.results[("export", key)] = {"succeeded": True, "message": "exported"}
    run(controller, body(), jobs=[export])
    convert = failed_job(controller, "convert")
    run(controller, body(), jobs=[export, convert])
    failed = last_status(controller)
    assert failed["stages"]["convert"]["state"] == "Failed"

    run(controller, with_retry(body(), "1"), jobs=[export, convert])
    retried = last_status(controller)
    assert retried["runHash"] != failed["runHash"]
    assert retried["observedGeneration"] == 1
    assert (retried["retry"], retried["retries"]) == ("1", 1)
    # The finished stage keeps its record; the failed one runs again under a new Job name.
    assert retried["stages"]["export"] == failed["stages"]["export"]
    assert retried["stages"]["convert"]["state"] == "Running"
    new_convert = controller.kube.jobs_created()[-1]
    assert new_convert.startswith("mlp-convert-")
    assert new_convert != convert["name"]
    # The failed run's Jobs and ConfigMap are deleted.
    assert convert["name"] in controller.kube.deleted
    assert export["name"] in controller.kube.deleted
    assert any(name.startswith("mlp-run-") for name in controller.kube.deleted)

    # The same value again starts nothing.
    created = len(controller.kube.created)
    run(controller, with_retry(body(), "1"))
    assert len(controller.kube.created) == created
    assert last_status(controller)["retries"] == 1


def test_retry_annotation_ignored_without_failure(controller):
    run(controller, with_retry(body(), "1"))
    first = last_status(controller)
    assert first["retry"] == "1"
    assert "retries" not in first

    # A value set while the stage runs is recorded and restarts nothing, then or later.
    run(controller, with_retry(body(), "2"))
    assert last_status(controller)["retry"] == "2"
    export = failed_job(controller, "export")
    run(controller, with_retry(body(), "2"), jobs=[export])
    failed = last_status(controller)
    assert failed["stages"]["export"]["state"] == "Failed"
    assert failed["runHash"] == first["runHash"]
    assert len(controller.kube.jobs_created()) == 1


def test_config_map_failed_alone_is_retried(controller):
    kube = controller.kube
    create = kube.create
    failures = []

    async def config_map_fails_once(path: str, manifest: dict) -> dict:
        if manifest["kind"] == "ConfigMap" and not failures:
            failures.append(path)
            raise ApiError(500, "InternalError", "etcd request timed out", "POST", path)
        return await create(path, manifest)

    kube.create = config_map_fails_once
    with pytest.raises(ApiError):
        run(controller, body())
    assert [item["kind"] for item in kube.created] == ["Job"]

    # The Job exists and its Pod waits for the ConfigMap: the next pass creates it.
    export = finished_job(controller, "export")
    export["conditions"], export["succeeded"], export["active"] = [], 0, 1
    run(controller, body(), jobs=[export])
    assert [item["kind"] for item in kube.created] == ["Job", "ConfigMap"]
    assert len(kube.jobs_created()) == 1
