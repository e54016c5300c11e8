"""The device stage: an on-device Core ML check by the macOS runner pool.

The stage is no Job. On the first pass it creates a `CoreMLCheck` in the pool namespace
(`--pool-namespace`) with presigned URLs for the converted package and the samples of the
convert stage. On every later pass it reads the check once and makes at most one
conditioned status write (`modelconv.runner.checks.step_check`). `device_decision` turns
that into the DeviceVerified condition:
- `coreml` results that all passed: DeviceVerified=True, the run goes on;
- `mil-reference` results: DeviceVerified=False, reason ReferenceOnly, the run goes on
  (a required check asks for the coreml backend, so a reference runner never takes it);
- no live runner matches, the runner was lost or the deadline passed: with
  `validation.device.required: false` DeviceVerified=False, reason Skipped, and the run
  goes on; when required, NoRunnerAvailable while waiting and RunnerLost or
  DeadlineExceeded at the end;
- a model that fails on the device fails the stage either way.

The check's name is deterministic (conversion name, uid and device key), so a restarted
operator adopts the check it created before. The check gets an ownerReference only in the
conversion's own namespace. In any other pool namespace, the operator deletes the check
itself when the run is superseded or the conversion is deleted.

Failure classes: a store that cannot presign URLs (a folder store) or a cluster that does
not serve CoreMLChecks is permanent for the run (Skipped when not required); waiting for a
runner is a Running record that the periodic re-check looks at again; API errors other
than 404 and 409 propagate to Kopf's backoff.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
from typing import Optional

from ..runner import checks
from ..runner.pool import RUNNER_SELECTOR, RunnerRecord, runner_from_lease
from ..runner.resource import COREML, PLURAL, VERSION
from ..spec import API_GROUP
from . import status as st
from .kube import ApiError, lease_path

log = logging.getLogger(__name__)

# The store cannot hand out presigned URLs (a local folder), so no Mac can fetch the package.
REASON_PRESIGN_UNSUPPORTED = "PresignUnsupported"
# The API server does not serve CoreMLChecks in the pool namespace.
REASON_POOL_MISSING = "RunnerPoolMissing"
# Files of the convert stage that a check reads: its result.json artifact names.
PACKAGE_ARTIFACT = "mlpackage"
SAMPLES_ARTIFACT = "samples"
# The compiled model in the device stage's result.json, and its file name in a release.
COMPILED_MODEL_ARTIFACT = "model.mlmodelc.zip"


def checks_path(namespace: str, name: str = "") -> str:
    return (f"/apis/{API_GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
            + (f"/{name}" if name else ""))


def check_run_key(conversion_uid: str, device_key: str) -> str:
    """Return the run key of a conversion's check: the same for the same uid and device key."""
    return hashlib.sha256(f"{conversion_uid}/{device_key}".encode()).hexdigest()


def check_name_of(conversion, device_key: str) -> str:
    """Return the CoreMLCheck name of one device stage of `conversion` (a ConversionRef)."""
    return checks.check_name(conversion.name, check_run_key(conversion.uid, device_key))


async def device_record(ctl, run, stage, previous: dict) -> dict:
    """Create or follow the run's CoreMLCheck; return the device stage's record."""
    namespace = ctl.config.pool_namespace
    name = check_name_of(run.conversion, stage.key)
    base = {"key": stage.key, "check": f"{namespace}/{name}",
            "started": previous.get("started") or run.timestamp}
    now = run.now

    try:
        obj = await _read_check(ctl.kube, namespace, name)
        if obj is None:
            created = await _create_check(ctl, run, stage, namespace)
            if isinstance(created, tuple):
                return _unavailable(base, run, *created)
            if created is None:  # deleted between a 409 and the read: create it next pass
                return dict(base, state=st.RUNNING, attempts=0, reason=checks.CHECK_PENDING,
                            message=f"creating CoreMLCheck {namespace}/{name}")
            obj = created
        runners = await _runners_if_needed(ctl.kube, namespace, obj, now)
        step = checks.step_check(obj, now, runners)
        written = step.write is None or await _write_check_status(ctl.kube, obj, step.write)
    except ApiError as error:
        if error.status != 403:
            raise
        log.warning("%s/%s: device check %s/%s: %s", run.conversion.namespace,
                    run.conversion.name, namespace, name, error.message)
        return _unavailable(base, run, REASON_POOL_MISSING, _pool_forbidden(namespace, error))
    evaluation = step.outcome(written)

    decision = checks.device_decision(evaluation, run.spec.validation.device.required)
    record = _record(base, evaluation, decision, run, ctl.results.store(run.store))
    if decision.publish and evaluation.results and record["state"] != previous.get("state"):
        # The publish stage reads this to put the device figures and the compiled model
        # into the release. It is written before the status, so publish always finds it.
        await ctl.results.write_result(
            run.store, "device", stage.key,
            device_result(evaluation, decision, stage.key, record["started"], record["finished"]))
    if decision.reason == checks.SKIPPED and evaluation.state == checks.NO_RUNNER_AVAILABLE:
        # No runner took the check, and one that starts later must not run it for a run
        # that went on without it.
        await delete_check(ctl.kube, namespace, name)
    if record["state"] != previous.get("state") or record.get("reason") != previous.get("reason"):
        log.info("%s/%s: device check %s/%s: %s %s", run.conversion.namespace,
                 run.conversion.name, namespace, name, decision.reason, decision.message)
    return record


def _record(base: dict, evaluation: checks.CheckEvaluation, decision: checks.DeviceDecision,
            run, store) -> dict:
    """Return the stage record of one decision, with the results of a finished check."""
    record = dict(base, reason=decision.reason, message=decision.message[:4096])
    if decision.publish is None:
        # Attempts of a device stage are the check's claims, which a requeue adds to.
        record.update(state=st.RUNNING, attempts=evaluation.attempts)
        return record
    if decision.status == "True":
        state = st.SUCCEEDED
    else:
        state = st.SKIPPED if decision.publish else st.FAILED
    record.update(state=state, finished=run.timestamp)
    if evaluation.attempts:
        record["attempts"] = evaluation.attempts
    if evaluation.runner:
        record["runner"] = evaluation.runner
    if evaluation.results:
        record["results"] = [_result(item) for item in evaluation.results]
    if evaluation.report_key:
        record["report"] = store.url_of(evaluation.report_key)
    if evaluation.compiled_model_key:
        record["compiledModel"] = store.url_of(evaluation.compiled_model_key)
    return record


def device_result(evaluation: checks.CheckEvaluation, decision: checks.DeviceDecision,
                  key: str, started: str, finished: str) -> dict:
    """Return the device stage's result.json: the figures a release carries, and the
    compiled model of a coreml runner as an artifact."""
    section = {
        # One runner ran the check, so every result has its backend.
        "backend": evaluation.results[0].backend,
        "verified": decision.status == "True",
        "reason": decision.reason,
        "runner": evaluation.runner,
        "results": [manifest_unit_result(item) for item in evaluation.results],
    }
    artifacts = {}
    prefix = f".cache/device/{key}/"
    if evaluation.compiled_model_key and evaluation.compiled_model_key.startswith(prefix):
        artifacts[COMPILED_MODEL_ARTIFACT] = {
            "file": evaluation.compiled_model_key[len(prefix):]}
    return {
        "stage": "device",
        "succeeded": True,
        "reason": decision.reason,
        "message": decision.message[:4096],
        "metrics": {"device": {name: value for name, value in section.items()
                               if value is not None}},
        "artifacts": artifacts,
        "started": _epoch(started),
        "finished": _epoch(finished),
    }


def manifest_unit_result(result) -> dict:
    """Return one compute unit's result in the release manifest's `device.results` form."""
    entry = {"passed": result.passed, "maxAbsError": result.max_abs_error,
             "cosine": result.cosine}
    if result.compute_unit is not None:  # mil-reference results have no compute unit
        entry["computeUnits"] = result.compute_unit
    latency = {"p50": result.latency_p50_ms, "p90": result.latency_p90_ms}
    if any(value is not None for value in latency.values()):
        entry["latencyMs"] = {name: value for name, value in latency.items() if value is not None}
    if result.load_ms is not None:
        entry["loadMs"] = result.load_ms
    if result.compile_ms is not None:
        entry["compileMs"] = result.compile_ms
    return entry


def _epoch(timestamp: Optional[str]) -> Optional[float]:
    if not timestamp:
        return None
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _result(result) -> dict:
    document = result.document()
    document.pop("message", None)
    return document


def _unavailable(base: dict, run, reason: str, message: str) -> dict:
    """Return the record of a check that cannot be handed out at all."""
    if run.spec.validation.device.required:
        return dict(base, state=st.FAILED, reason=reason, message=message,
                    finished=run.timestamp)
    return dict(base, state=st.SKIPPED, reason=st.REASON_SKIPPED, finished=run.timestamp,
                message=f"{message}; skipped because validation.device.required is false")


def device_metrics(metrics: Optional[dict], record: Optional[dict]) -> Optional[dict]:
    """Return `metrics` with deviceLatencyP50Ms from the coreml results of a device record."""
    latencies = [item["latencyP50Ms"] for item in (record or {}).get("results") or []
                 if item.get("backend") == COREML and item.get("latencyP50Ms") is not None]
    if not latencies:
        return metrics
    return {**(metrics or {}), "deviceLatencyP50Ms": min(latencies)}


# --- creating a check -------------------------------------------------------------------


async def _create_check(ctl, run, stage, namespace: str):
    """Create the run's check; return the object, or (reason, message) when it cannot be."""
    from ..store.s3 import S3Store  # imported on first use, as results.py opens stores

    store = ctl.results.store(run.store)
    if not isinstance(store, S3Store):
        return REASON_PRESIGN_UNSUPPORTED, (
            f"the store {run.store} cannot make presigned URLs, so no macOS runner can fetch "
            "the package; use an s3:// store (spec.publish.store or the operator's --store) "
            "for on-device checks")
    convert = run.plan.stage("convert")
    result = await ctl.results.result(run.store, "convert", convert.key)
    try:
        objects = _check_objects(result, convert.key, stage.key,
                                 check_name_of(run.conversion, stage.key))
    except ValueError as error:
        return st.REASON_RESULT_MISSING, str(error)
    manifest = checks.check_manifest(
        run.body, run.spec, check_run_key(run.conversion.uid, stage.key), objects,
        checks.S3Presigner(store, ctl.config.presign_endpoint), namespace=namespace,
        now=run.now,
        timeout_seconds=run.spec.validation.device.timeout_seconds)
    try:
        created = await ctl.kube.create(checks_path(namespace), manifest)
        log.info("%s/%s: created CoreMLCheck %s/%s", run.conversion.namespace,
                 run.conversion.name, namespace, manifest["metadata"]["name"])
        return created
    except ApiError as error:
        if error.not_found:
            return REASON_POOL_MISSING, (
                f"the API server does not serve CoreMLChecks in namespace {namespace}; apply "
                "crds/coremlcheck.yaml (or install the chart with crds.enabled) and check "
                "the operator's --pool-namespace")
        if error.status == 403:
            return REASON_POOL_MISSING, _pool_forbidden(namespace, error)
        if not error.conflict:
            raise
    # Created before a restart: adopt it.
    return await _read_check(ctl.kube, namespace, manifest["metadata"]["name"])


def _pool_forbidden(namespace: str, error: ApiError) -> str:
    """Return the message for a request on CoreMLChecks or runner Leases that got 403."""
    return (f"the operator lacks rights on the runner pool in namespace {namespace}: "
            f"{error.message}; grant it the pool rules of modelconv.controller.rbac there "
            "(the chart does so in runners.namespace)")


def _check_objects(convert_result: Optional[dict], convert_key: str, device_key: str,
                   name: str) -> checks.CheckObjects:
    """Return the store keys of a check: the convert stage's package and samples, and
    report and compiled model keys of its own under the device cache folder."""
    artifacts = (convert_result or {}).get("artifacts") or {}
    package, samples = artifacts.get(PACKAGE_ARTIFACT), artifacts.get(SAMPLES_ARTIFACT)
    if not package or not samples:
        raise ValueError(f"the convert result under .cache/convert/{convert_key} has no "
                         f"{PACKAGE_ARTIFACT} and {SAMPLES_ARTIFACT} artifacts; delete that "
                         "cache folder so the convert stage runs again")
    source = f".cache/convert/{convert_key}"
    target = f".cache/device/{device_key}/{name}"
    return checks.CheckObjects(
        package=f"{source}/{package['file']}", package_sha256=package.get("sha256"),
        inputs=f"{source}/{samples['file']}", inputs_sha256=samples.get("sha256"),
        expected_outputs=f"{source}/{samples['file']}",
        expected_outputs_sha256=samples.get("sha256"),
        report=f"{target}/report.json", compiled_model=f"{target}/model.mlmodelc.zip",
    )


# --- reading and writing checks ---------------------------------------------------------


async def _read_check(kube, namespace: str, name: str) -> Optional[dict]:
    try:
        return await kube.get(checks_path(namespace, name))
    except ApiError as error:
        if error.not_found:
            return None
        raise


async def _runners_if_needed(kube, namespace: str, obj: dict,
                             now: datetime.datetime) -> list[RunnerRecord]:
    """Return the live runners when the check is Pending (only then do they matter)."""
    if not checks.needs_runners(obj, now):
        return []
    leases = await kube.get(lease_path(namespace), labelSelector=RUNNER_SELECTOR)
    records = map(runner_from_lease, leases.get("items") or [])
    return [record for record in records if record.is_live(now)]


async def _write_check_status(kube, obj: dict, status) -> bool:
    """Write `status` conditioned on the object's resourceVersion; False when it lost a race."""
    metadata = obj["metadata"]
    path = checks_path(metadata["namespace"], metadata["name"]) + "/status"
    try:
        await kube.replace(path, {**obj, "status": status.document()})
    except ApiError as error:
        if error.conflict or error.not_found:
            return False
        raise
    return True


async def delete_check(kube, namespace: str, name: str) -> None:
    """Delete one check; a check gone already is fine."""
    try:
        await kube.delete(checks_path(namespace, name))
    except ApiError as error:
        if not error.not_found:
            raise


async def delete_checks_of(ctl, conversion_namespace: str, conversion_name: str,
                           keep: Optional[str] = None) -> int:
    """Delete the checks of a conversion in the pool namespace, except `keep`; return how many.

    Checks are found by their conversion label and namespace annotation, because an owner
    reference cannot reach across namespaces.
    """
    namespace = ctl.config.pool_namespace
    try:
        listed = await ctl.kube.get(checks_path(namespace),
                                    labelSelector=f"{checks.CONVERSION_LABEL}={conversion_name}")
    except ApiError as error:
        if error.not_found:
            return 0  # the CoreMLCheck CRD is not installed: there is nothing to delete
        raise
    deleted = 0
    for item in listed.get("items") or []:
        metadata = item["metadata"]
        annotations = metadata.get("annotations") or {}
        owner = annotations.get(checks.CONVERSION_NAMESPACE_ANNOTATION)
        if owner != conversion_namespace or metadata["name"] == keep:
            continue
        await delete_check(ctl.kube, namespace, metadata["name"])
        deleted += 1
    if deleted:
        log.info("%s/%s: deleted %d CoreMLCheck(s) in %s", conversion_namespace,
                 conversion_name, deleted, namespace)
    return deleted


async def release_superseded_checks(ctl, conversion, plan) -> None:
    """Delete the checks of earlier runs; the current run's check, if any, stays."""
    stage = plan.stage("device")
    keep = check_name_of(conversion, stage.key) if stage is not None and stage.key else None
    await delete_checks_of(ctl, conversion.namespace, conversion.name, keep=keep)

