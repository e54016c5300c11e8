"""Reconciliation of one ModelConversion: plan the run, advance it, write the status.

`reconcile` is level-based: whatever triggered it (the resource changed, one of its Jobs
or Pods changed, the periodic re-check), it reads the current state and takes the next
step, so a missed or repeated trigger does no harm. Passes over one conversion never
overlap (a lock per uid).

State lives in the cluster and the store only: the run hash and stage records in
status, the Jobs themselves, and the results in the store cache. The in-memory copy of
the last written status only saves a stale read between a write and its watch event.

Failure classes:
- an invalid spec, an unset store or a failed stage: a condition reason, no retry until
  the spec changes (or, for a failed stage, the retry annotation does: see `retry`);
- a running Job: nothing to do until its next event or the periodic re-check;
- API or store errors: raised to Kopf, which retries the handler with backoff.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any, Callable, Iterable, Optional

from pydantic import ValidationError

from ..errors import ConversionError
from ..plan import RunPlan, plan_run
from ..spec import ConversionSpec
from . import status as st
from . import summary
from .config import OperatorConfig
from .jobs import RUN_LABEL_LENGTH, ConversionRef, run_config_map_name
from .kube import ApiError, KubeClient, config_maps_path, conversion_path, jobs_path
from .metrics import OperatorMetrics
from .device import delete_checks_of, device_metrics, release_superseded_checks
from .results import ResultReader
from .retry import RetryState, kept_records, retry_state
from .stages import RunPass, run_stages

log = logging.getLogger(__name__)

EventPoster = Callable[[Any, summary.Event], None]
# Plans kept per conversion: the current one, with and without a training run.
MAX_PLANS_PER_CONVERSION = 4


class Controller:
    """The operator's state shared by all handlers of one process."""

    def __init__(self, config: OperatorConfig, kube: KubeClient, results: ResultReader,
                 metrics: OperatorMetrics, post_event: EventPoster):
        self.config = config
        self.kube = kube
        self.results = results
        self.metrics = metrics
        self.post_event = post_event
        self.locks: dict[str, asyncio.Lock] = {}
        self.written: dict[str, dict] = {}
        self.config_maps_made: dict[str, str] = {}
        self.running_jobs: dict[str, int] = {}
        # Jobs created by this process that the watch has not shown yet, with a deadline.
        self.created_jobs: dict[str, float] = {}
        # Parsed specs and plans by conversion uid: a spec changes only with its generation,
        # and every Job or Pod event would otherwise parse and hash it again.
        self.specs: dict[str, tuple] = {}
        self.plans: dict[str, dict[tuple, RunPlan]] = {}
        metrics.count_running_jobs(lambda: sum(self.running_jobs.values()))

    def forget(self, uid: str) -> None:
        """Drop what the process remembers of a deleted conversion."""
        for table in (self.locks, self.written, self.config_maps_made, self.running_jobs,
                      self.specs, self.plans):
            table.pop(uid, None)

    def spec_of(self, body: Any) -> tuple[Optional[ConversionSpec], Optional[tuple[str, str]]]:
        """Return `parse_spec(body)`, parsed once per generation."""
        uid, generation = body["metadata"]["uid"], body["metadata"].get("generation")
        cached = self.specs.get(uid)
        if cached is None or cached[0] != generation:
            cached = (generation, *parse_spec(body))
            self.specs[uid] = cached
        return cached[1], cached[2]

    def plan_of(self, uid: str, generation: int, spec: ConversionSpec, source_version: str,
                trained_run: Optional[str] = None, retries: int = 0) -> RunPlan:
        """Return the plan of `spec`, computed once per generation and inputs.

        `retries` (runs started by the retry annotation) is part of the run hash when set.
        """
        plans = self.plans.setdefault(uid, {})
        key = (generation, source_version, trained_run, retries)
        if key not in plans:
            if len(plans) >= MAX_PLANS_PER_CONVERSION:
                plans.clear()
            settings = self.config.job_settings()
            if retries:
                settings["retries"] = retries
            plans[key] = plan_run(spec, job_settings=settings,
                                  source_version=source_version, trained_run=trained_run)
        return plans[key]

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and, in the background, its Pods; a Job gone already is fine."""
        try:
            await self.kube.delete(jobs_path(namespace, name), propagation="Background")
            log.info("%s: deleted Job %s", namespace, name)
        except ApiError as error:
            if not error.not_found:
                raise


async def reconcile(ctl: Controller, body: Any, jobs: Iterable[dict],
                    pods: dict[str, list[dict]], now: Optional[datetime.datetime] = None) -> None:
    """Advance one conversion; `jobs` and `pods` are its Jobs' and Pods' projections."""
    metadata = body["metadata"]
    if metadata.get("deletionTimestamp"):
        return
    lock = ctl.locks.setdefault(metadata["uid"], asyncio.Lock())
    async with lock:
        moment = now or datetime.datetime.now(datetime.timezone.utc)
        await _reconcile(ctl, body, list(jobs), pods, moment)


async def _reconcile(ctl: Controller, body: Any, jobs: list[dict],
                     pods: dict[str, list[dict]], now: datetime.datetime) -> None:
    conversion = ConversionRef.from_body(body)
    previous = ctl.written.get(conversion.uid) or dict(body.get("status") or {})
    generation = body["metadata"].get("generation") or 0
    if (previous.get("observedGeneration") or 0) > generation:
        return  # this view of the object predates the status written last; a newer one comes

    spec, problem = ctl.spec_of(body)
    store = (spec.publish.store or ctl.config.store) if spec is not None else None
    if spec is not None and not store:
        problem = (st.REASON_STORE_NOT_CONFIGURED, (
            "no store for the stage cache and the release: set spec.publish.store "
            "(s3://bucket/prefix) or start the operator with --store"))
    if problem is not None:
        await _delete_stale(ctl, conversion, jobs, keep_run=None)
        if previous.get("runHash"):
            # The stopped run's ConfigMap and device check go with its Jobs.
            await _delete_run_config_map(ctl, conversion, previous["runHash"])
            try:
                await delete_checks_of(ctl, conversion.namespace, conversion.name)
            except ApiError as error:  # an unusable pool must not keep the status unwritten
                log.warning("%s/%s: deleting the stopped run's CoreMLChecks failed: %s",
                            conversion.namespace, conversion.name, error.message)
        status = _stopped_status(previous, problem, generation, now)
        await _write_status(ctl, body, previous, status)
        return

    retry = retry_state(body, previous, generation)
    plan, source_version, records = await _plan(ctl, conversion.uid, spec, previous, generation,
                                                retry)
    if previous.get("runHash") and previous["runHash"] != plan.run_hash:
        await _supersede(ctl, conversion, previous, retry)
        await release_superseded_checks(ctl, conversion, plan)
    await _delete_stale(ctl, conversion, jobs, keep_run=plan.run_hash)

    current = plan.run_hash[:RUN_LABEL_LENGTH]
    run = RunPass(
        body=body, conversion=conversion, spec=spec, plan=plan, store=store, previous=records,
        jobs={job["name"]: job for job in jobs if job["run"] == current},
        pods=pods, now=now,
        replan=lambda run_id: ctl.plan_of(conversion.uid, generation, spec, source_version,
                                          run_id, retry.retries),
    )
    await run_stages(ctl, run)
    status = _run_status(previous, run, generation, source_version, retry)
    await _write_status(ctl, body, previous, status)


def parse_spec(body: Any) -> tuple[Optional[ConversionSpec], Optional[tuple[str, str]]]:
    """Return (spec, None), or (None, (reason, message)) when the spec is invalid.

    The API server checks the schema and CEL rules; this also runs the checks that only the
    spec models make, and the ones the stages will make (metadata.name).
    """
    from ..spec import parse_conversion

    document = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                "metadata": {"name": body["metadata"]["name"],
                             "namespace": body["metadata"].get("namespace")},
                "spec": body.get("spec")}
    try:
        return parse_conversion(document).spec, None
    except ConversionError as error:
        return None, (st.REASON_INVALID_SPEC, f"{error.message}; fix the spec and apply it again")
    except ValidationError as error:  # not expected: parse_conversion classifies its errors
        return None, (st.REASON_INVALID_SPEC, str(error).splitlines()[0])


async def _plan(ctl: Controller, uid: str, spec: ConversionSpec, previous: dict,
                generation: int, retry: RetryState) -> tuple[RunPlan, str, dict]:
    """Return the run plan, the source version and the stage records of the same run.

    A run that the retry annotation starts keeps the finished records of the failed run.
    """
    same_generation = previous.get("observedGeneration") == generation and previous.get("runHash")
    # A retry reads the source's version again: the source may be what was fixed.
    if same_generation and not retry.started_now:
        source_version = previous.get("sourceVersion") or ""
    else:
        source_version = await ctl.results.source_version(spec)
    plan = ctl.plan_of(uid, generation, spec, source_version, retries=retry.retries)
    if previous.get("runHash") == plan.run_hash:
        records = dict(previous.get("stages") or {})
    else:
        records = kept_records(previous) if retry.started_now else {}
    trained = records.get("train") or {}
    if trained.get("state") == st.SUCCEEDED and trained.get("runId"):
        plan = ctl.plan_of(uid, generation, spec, source_version, trained["runId"],
                           retry.retries)
    return plan, source_version, records


async def _supersede(ctl: Controller, conversion: ConversionRef, previous: dict,
                     retry: RetryState) -> None:
    """Remove the ConfigMap of the previous run; its Jobs go with `_delete_stale`."""
    await _delete_run_config_map(ctl, conversion, previous["runHash"])
    cause = f"retry {retry.requested!r}" if retry.started_now else "a spec change"
    log.info("%s/%s: run %s superseded by %s", conversion.namespace,
             conversion.name, previous["runHash"][:RUN_LABEL_LENGTH], cause)


async def _delete_run_config_map(ctl: Controller, conversion: ConversionRef,
                                 run_hash: str) -> None:
    """Delete the ConfigMap of the run `run_hash`; one gone already is fine."""
    name = run_config_map_name(conversion, run_hash)
    try:
        await ctl.kube.delete(config_maps_path(conversion.namespace, name))
    except ApiError as error:
        if not error.not_found:
            raise
    ctl.config_maps_made.pop(conversion.uid, None)


async def _delete_stale(ctl: Controller, conversion: ConversionRef, jobs: list[dict],
                        keep_run: Optional[str]) -> None:
    """Delete this conversion's Jobs of any run but `keep_run` (all of them for None)."""
    keep = keep_run[:RUN_LABEL_LENGTH] if keep_run else None
    for job in jobs:
        if job["run"] != keep and not job["deleting"] and job["owner"] == conversion.uid:
            await ctl.delete_job(conversion.namespace, job["name"])


def _stopped_status(previous: dict, problem: tuple[str, str], generation: int,
                    now: datetime.datetime) -> dict:
    reason, message = problem
    timestamp = st.now_rfc3339(now)
    conditions = st.set_condition(previous.get("conditions") or [], st.READY, "False", reason,
                                  message, generation=generation, now=timestamp)
    conditions = [item for item in conditions if item["type"] == st.READY]
    return {"observedGeneration": generation, "stage": "Invalid", "conditions": conditions}


def _run_status(previous: dict, run: RunPass, generation: int, source_version: str,
                retry: RetryState) -> dict:
    # A retried run keeps the finished stages, and with them their release and metrics.
    same_run = previous.get("runHash") == run.plan.run_hash or retry.started_now
    release = summary.release_status(run.results.get("publish"))
    if release is not None:
        release.update(model=run.spec.publish.model, version=run.spec.publish.version)
    elif same_run:
        release = previous.get("release")
    metrics = summary.headline_metrics(run.results.get("validate"))
    if metrics is None and same_run:
        metrics = previous.get("metrics")
    metrics = device_metrics(metrics, run.records.get("device"))
    names = run.plan.names
    conditions = summary.build_conditions(
        previous.get("conditions") or [], names, run.records, release,
        generation=generation, now=run.timestamp)
    status = {
        "observedGeneration": generation,
        "runHash": run.plan.run_hash,
        "sourceVersion": source_version,
        "stage": summary.current_stage(names, run.records),
        "conditions": conditions,
        "stages": {name: _clean(record) for name, record in run.records.items()},
        "release": release,
        "metrics": metrics,
        "retry": retry.requested,
        "retries": retry.retries or None,
    }
    return _clean(status)


def _clean(mapping: dict) -> dict:
    return {key: value for key, value in mapping.items() if value not in (None, "", {})}


async def _write_status(ctl: Controller, body: Any, previous: dict, status: dict) -> None:
    """Write `status` when it differs from `previous`; post Events and update metrics."""
    uid = body["metadata"]["uid"]
    ctl.running_jobs[uid] = sum(1 for record in (status.get("stages") or {}).values()
                                if record.get("state") == st.RUNNING and record.get("job"))
    if status == previous:
        return
    path = conversion_path(body["metadata"]["namespace"], body["metadata"]["name"]) + "/status"
    try:
        await ctl.kube.json_patch(path, [{"op": "add", "path": "/status", "value": status}])
    except ApiError as error:
        if error.not_found:
            return  # deleted meanwhile
        raise
    ctl.written[uid] = status
    for event in summary.transition_events(previous.get("conditions") or [],
                                           status.get("conditions") or []):
        # The same line in the operator's log, for those who read logs rather than Events.
        (log.warning if event.type == "Warning" else log.info)(
            "%s/%s: %s: %s", body["metadata"]["namespace"], body["metadata"]["name"],
            event.reason, event.message)
        ctl.post_event(body, event)
    _count(ctl.metrics, previous, status)


def _count(metrics: OperatorMetrics, previous: dict, status: dict) -> None:
    """Update the counters for the stage and Ready transitions between two statuses."""
    same_run = previous.get("runHash") == status.get("runHash")
    before = (previous.get("stages") or {}) if same_run else {}
    for name, record in (status.get("stages") or {}).items():
        old = before.get(name) or {}
        retries = (record.get("attempts") or 0) - max(1, old.get("attempts") or 0)
        if retries > 0:
            metrics.retries.labels(name).inc(retries)
        if record.get("state") == old.get("state"):
            continue
        if record.get("cacheHit"):
            metrics.cache_hits.labels(name).inc()
        elif record.get("state") in (st.SUCCEEDED, st.FAILED) and record.get("started"):
            seconds = _seconds_between(record["started"], record.get("finished"))
            if seconds is not None:
                metrics.stage_duration.labels(name, record["state"].lower()).observe(seconds)
    ready_before = st.find_condition(previous.get("conditions") or [], st.READY) or {}
    ready = st.find_condition(status.get("conditions") or [], st.READY) or {}
    finished = ready.get("status") in ("True", "False")
    if finished and ready.get("status") != ready_before.get("status"):
        metrics.conversions.labels("succeeded" if ready["status"] == "True" else "failed").inc()


def _seconds_between(start: str, end: Optional[str]) -> Optional[float]:
    from .observe import parse_time

    try:
        began, ended = parse_time(start), parse_time(end)
    except ValueError:
        return None
    if began is None or ended is None:
        return None
    return max(0.0, (ended - began).total_seconds())
