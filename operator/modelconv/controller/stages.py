"""One pass over the stages of a run: observe each in order and start the next one due.

For each planned stage, the first of these that applies decides:
1. the status already records it as succeeded or failed in this run (a failed stage is not
   retried within a run: a spec change or the retry annotation starts a new run);
2. its Job exists: the Job and its Pods show it running, succeeded or failed;
3. its key has a successful `result.json` in the store: a cache hit, no Job;
4. otherwise the stage is due: create the run's ConfigMap (once) and the stage's Job, both
   at once.

The pass stops at the first stage that is running or failed. Creating an object that
exists already (HTTP 409) adopts it, so a restarted operator never makes a twin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from typing import Any, Callable, Optional

from ..plan import CACHED_STAGES, PlannedStage, RunPlan
from ..redaction import redact_urls
from ..spec import ConversionSpec
from . import jobs as manifests
from . import status as st
from .device import device_record
from .kube import ApiError, config_maps_path, jobs_path
from .observe import JobOutcome, job_outcome, result_outcome

log = logging.getLogger(__name__)

# A stage in one of these states stays so for the rest of its run.
FINAL_STATES = (st.SUCCEEDED, st.FAILED, st.SKIPPED)
# Failure reasons the controller makes up when the stage left no reason of its own.
UNEXPLAINED_REASONS = (st.REASON_STAGE_FAILED, st.REASON_RETRIES_EXHAUSTED)
# Seconds a newly created Job may take to appear in the Job watch before the operator
# creates it again (and normally gets 409, because it exists).
WATCH_DELAY_SECONDS = 30.0


@dataclasses.dataclass
class RunPass:
    """Everything one pass over a run reads and writes."""

    body: Any
    conversion: manifests.ConversionRef
    spec: ConversionSpec
    plan: RunPlan
    store: str
    previous: dict  # stage records of this run from the last status
    jobs: dict[str, dict]  # Job projections of this conversion by name
    pods: dict[str, list[dict]]  # Pod projections by Job name
    now: datetime.datetime
    # Returns the plan with the keys of the stages after a training run with this Job uid.
    replan: Optional[Callable[[str], RunPlan]] = None
    records: dict = dataclasses.field(default_factory=dict)
    results: dict = dataclasses.field(default_factory=dict)  # result.json by stage

    @property
    def timestamp(self) -> str:
        return st.now_rfc3339(self.now)


async def run_stages(ctl, run: RunPass) -> None:
    """Fill `run.records` for the planned stages, starting the next due stage's Job."""
    for name in run.plan.names:
        record = await _step(ctl, run, run.plan.stage(name))
        run.records[name] = record
        if record["state"] not in (st.SUCCEEDED, st.SKIPPED):
            break
        # The stages after training get their keys once the training run is known.
        if name == "train" and run.replan is not None and run.plan.stage("export").key is None:
            run.plan = run.replan(record["runId"])


async def _step(ctl, run: RunPass, stage: PlannedStage) -> dict:
    previous = run.previous.get(stage.name) or {}
    base = {"key": stage.key} if stage.key else {}
    if previous.get("state") in FINAL_STATES and previous.get("key") == stage.key:
        return previous
    if stage.name == "device":
        return await device_record(ctl, run, stage, previous)

    name = manifests.job_name(run.conversion, run.plan.run_hash, stage.name)
    base.update(job=name, started=previous.get("started"), attempts=previous.get("attempts", 0))
    job = run.jobs.get(name)
    if job is not None and not job["deleting"]:
        ctl.created_jobs.pop(name, None)
        if stage.name != "train":
            # The ConfigMap is created along with the first Job and may have failed alone;
            # the Job's Pod waits for it. After a restart this adopts it (409) once.
            await _ensure_config_map(ctl, run)
        return await _from_job(ctl, run, stage, job, base)
    if ctl.created_jobs.get(name, 0.0) > time.monotonic():
        # Created moments ago and not in the watch yet: creating it again would only get 409.
        return {**base, "state": st.RUNNING, "attempts": max(1, base["attempts"] or 0)}

    if stage.name in CACHED_STAGES and stage.key:
        result = await ctl.results.result(run.store, stage.name, stage.key)
        if result is not None and result.get("succeeded") and stage.name == "publish" and (
                previous.get("state") != st.SUCCEEDED):
            # A publish about to count as done: its release may have been deleted by hand.
            if not await _release_present(ctl, run):
                log.info("%s/%s: the cached publish result's release is gone; publishing again",
                         run.conversion.namespace, run.conversion.name)
                result = None
        if result is not None and result.get("succeeded"):
            run.results[stage.name] = result
            # A Job this operator started and that is gone already (ttlSecondsAfterFinished)
            # is no cache hit: its result is this run's own.
            if previous.get("state") == st.RUNNING:
                return {**base, "state": st.SUCCEEDED, "finished": run.timestamp,
                        "message": _result_message(result)}
            return {"key": stage.key, "state": st.SUCCEEDED, "cacheHit": True,
                    "message": _result_message(result)}
    if job is not None:
        return {**base, "state": st.RUNNING}  # the old Job is being deleted; wait for it
    return await _start(ctl, run, stage, base)


async def _release_present(ctl, run: RunPass) -> bool:
    from ..pipeline.stage_job import release_present

    store = ctl.results.store(run.store)
    return await asyncio.to_thread(release_present, store, run.spec)


async def _from_job(ctl, run: RunPass, stage: PlannedStage, job: dict, base: dict) -> dict:
    if job["owner"] != run.conversion.uid:
        return {**base, "state": st.FAILED, "reason": st.REASON_JOB_NAME_CONFLICT, "message": (
            f"Job {job['name']} exists but is not owned by this ModelConversion; delete it "
            "so the operator can create its own")}
    outcome = job_outcome(job, run.pods.get(job["name"], []), now=run.now,
                          image_pull_grace=ctl.config.image_pull_grace_seconds)
    if outcome.stop:
        await ctl.delete_job(run.conversion.namespace, job["name"])

    if outcome.state == st.FAILED and outcome.reason in UNEXPLAINED_REASONS and stage.key:
        # No termination message was seen, because the Pod's last update may not have reached
        # the watch yet. A stage that failed for good also writes its reason to the store.
        result = await ctl.results.result(run.store, stage.name, stage.key)
        if result is not None and not result.get("succeeded"):
            _, reason, message = result_outcome(result)
            outcome = dataclasses.replace(outcome, reason=reason, message=message)
    if outcome.state != st.SUCCEEDED:
        return _from_outcome(base, outcome, run)
    if stage.name == "train":
        return {**base, "state": st.SUCCEEDED, "runId": job["uid"], "attempts": outcome.attempts,
                "finished": outcome.finished or run.timestamp}

    result = await ctl.results.result(run.store, stage.name, stage.key)
    if result is None:
        return {**base, "state": st.FAILED, "reason": st.REASON_RESULT_MISSING, "message": (
            f"Job {job['name']} succeeded but wrote no result.json under "
            f"{run.store}/.cache/{stage.name}/{stage.key}; check the stage image's modelconv "
            "version and the store credentials")}
    run.results[stage.name] = result
    state, reason, message = result_outcome(result)
    record = {**base, "state": state, "attempts": outcome.attempts,
              "finished": outcome.finished or run.timestamp, "message": message}
    if state == st.FAILED:
        record["reason"] = reason
    return record


def _result_message(result: dict) -> str:
    return redact_urls(str(result.get("message") or ""))[:1024]


def _from_outcome(base: dict, outcome: JobOutcome, run: RunPass) -> dict:
    record = {**base, "state": outcome.state}
    if outcome.state == st.RUNNING:
        record["attempts"] = max(1, outcome.attempts)
        return record
    record["finished"] = outcome.finished or run.timestamp
    if outcome.attempts:
        record["attempts"] = outcome.attempts
    if outcome.reason:
        record.update(reason=outcome.reason, message=outcome.message)
    return record


async def _start(ctl, run: RunPass, stage: PlannedStage, base: dict) -> dict:
    """Create the stage's Job (and at the same time the run's ConfigMap); return a Running
    record."""
    if stage.name == "train":
        manifest = manifests.train_job(run.conversion, run.plan, stage, run.spec, ctl.config)
        await _create_job(ctl, run, stage, manifest)
    else:
        manifest = manifests.stage_job(run.conversion, run.plan, stage, run.spec, ctl.config)
        # Both requests at once, so the first Job waits one API round trip less. The Job's
        # Pod cannot start before its ConfigMap exists, and the kubelet retries the mount
        # until it does. A failed ConfigMap create raises here, and the next pass retries it.
        await asyncio.gather(_ensure_config_map(ctl, run),
                             _create_job(ctl, run, stage, manifest))
    return {**base, "state": st.RUNNING, "attempts": max(1, base.get("attempts") or 0),
            "started": base.get("started") or run.timestamp}


async def _create_job(ctl, run: RunPass, stage: PlannedStage, manifest: dict) -> None:
    namespace, name = run.conversion.namespace, manifest["metadata"]["name"]
    try:
        await ctl.kube.create(jobs_path(namespace), manifest)
        log.info("%s/%s: created Job %s for stage %s", namespace, run.conversion.name, name,
                 stage.name)
    except ApiError as error:
        if not error.conflict:
            raise
        # Created before a restart, or by a replica that lost its lease: adopt it.
        log.debug("Job %s/%s exists already; adopting it", namespace, name)
    ctl.created_jobs[name] = time.monotonic() + WATCH_DELAY_SECONDS


async def _ensure_config_map(ctl, run: RunPass) -> None:
    name = manifests.run_config_map_name(run.conversion, run.plan.run_hash)
    if ctl.config_maps_made.get(run.conversion.uid) == name:
        return
    source = None
    if run.spec.train is not None:
        source = manifests.trained_source(run.spec)
    document = manifests.run_document(run.body, run.plan, run.store, source)
    manifest = manifests.run_config_map(run.conversion, run.plan, document)
    try:
        await ctl.kube.create(config_maps_path(run.conversion.namespace), manifest)
    except ApiError as error:
        if not error.conflict:
            raise
    ctl.config_maps_made[run.conversion.uid] = name
