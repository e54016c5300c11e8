"""The status document of a run: conditions, the current stage, release and headline metrics,
computed from the per-stage records, and the Events that announce its transitions.

Pure functions: the records in, JSON out.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from . import status as st

# Transitions worth an Event: a stage started, finished, was skipped or failed; the
# conversion became Ready. Pending conditions change quietly.
QUIET_REASONS = (st.REASON_PENDING, st.REASON_IN_PROGRESS)


@dataclasses.dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the conversion."""

    type: str  # Normal or Warning
    reason: str
    message: str


def stage_condition(name: str, record: Optional[dict], waiting_for: str) -> tuple[str, str, str]:
    """Return (status, reason, message) of the condition of stage `name`."""
    state = (record or {}).get("state", st.PENDING)
    message = (record or {}).get("message") or ""
    if record and record.get("check") and state in (st.SUCCEEDED, st.RUNNING):
        return device_condition(record)
    if state == st.SUCCEEDED:
        if record.get("cacheHit"):
            return "True", st.REASON_CACHE_HIT, (
                f"result reused from the store cache (key {record.get('key', '')[:12]}), no "
                f"Job ran: {message}".rstrip(": "))
        detail = f"Job {record.get('job')} succeeded: {message}"
        return "True", st.REASON_SUCCEEDED, detail.rstrip(": ")
    if state == st.SKIPPED:
        return "False", record.get("reason") or st.REASON_SKIPPED, message
    if state == st.FAILED:
        return "False", record.get("reason") or st.REASON_STAGE_FAILED, message
    if state == st.RUNNING:
        return "Unknown", st.REASON_RUNNING, (
            f"Job {record.get('job')} is running (attempt {record.get('attempts', 1)})")
    return "Unknown", st.REASON_PENDING, f"waiting for {waiting_for}"


def device_condition(record: dict) -> tuple[str, str, str]:
    """Return (status, reason, message) of DeviceVerified for a stage with a CoreMLCheck.

    A check waiting with no runner to take it is False (NoRunnerAvailable), not Unknown,
    because nothing will happen until a runner comes.
    """
    state, reason = record["state"], record.get("reason") or st.REASON_RUNNING
    message = record.get("message") or f"CoreMLCheck {record['check']}"
    if state == st.SUCCEEDED:
        return "True", reason, message
    return ("False" if reason == st.REASON_NO_RUNNER else "Unknown"), reason, message


def current_stage(names: tuple[str, ...], records: dict) -> str:
    """Return the first stage that is not done (the failed one when a stage failed), or Done."""
    for name in names:
        state = records.get(name, {}).get("state", st.PENDING)
        if state not in (st.SUCCEEDED, st.SKIPPED):
            return name
    return "Done"


def ready_condition(names: tuple[str, ...], records: dict,
                    release: Optional[dict]) -> tuple[str, str, str]:
    """Return (status, reason, message) of Ready."""
    stage = current_stage(names, records)
    if stage == "Done":
        location = (release or {}).get("location", "the store")
        return "True", st.REASON_PUBLISHED, f"published to {location}"
    record = records.get(stage, {})
    if record.get("state") == st.FAILED:
        reason = record.get("reason") or st.REASON_STAGE_FAILED
        return "False", reason, f"stage {stage} failed: {record.get('message') or reason}"
    if record.get("state") == st.RUNNING:
        running = f"Job {record.get('job')}" if record.get("job") else (
            f"CoreMLCheck {record.get('check')}: {record.get('message') or ''}".rstrip(": "))
        detail = f"stage {stage} is running ({running})"
        return "Unknown", st.REASON_IN_PROGRESS, detail
    return "Unknown", st.REASON_IN_PROGRESS, f"stage {stage} is next"


def build_conditions(previous: list[dict], names: tuple[str, ...], records: dict,
                     release: Optional[dict], *, generation: int, now: str) -> list[dict]:
    """Return the conditions of every planned stage and Ready, based on `previous`."""
    conditions = [item for item in previous or []
                  if item.get("type") == st.READY
                  or item.get("type") in {st.STAGE_CONDITIONS[name] for name in names}]
    waiting_for = "the operator"
    for name in names:
        status, reason, message = stage_condition(name, records.get(name), waiting_for)
        conditions = st.set_condition(conditions, st.STAGE_CONDITIONS[name], status, reason,
                                      message, generation=generation, now=now)
        waiting_for = f"stage {name}"
    status, reason, message = ready_condition(names, records, release)
    return st.set_condition(conditions, st.READY, status, reason, message,
                            generation=generation, now=now)


def transition_events(previous: list[dict], current: list[dict]) -> list[Event]:
    """Return an Event for each condition whose status or reason changed."""
    events = []
    stage_failed = any(condition["type"] != st.READY and condition["status"] == "False"
                       for condition in current)
    for condition in current:
        before = st.find_condition(previous, condition["type"])
        if before is not None and (before.get("status"), before.get("reason")) == (
                condition["status"], condition["reason"]):
            continue
        if condition["reason"] in QUIET_REASONS:
            continue
        if condition["type"] == st.READY and condition["status"] != "True" and stage_failed:
            continue  # the failed stage's own condition has announced it
        kind = "Warning" if condition["status"] == "False" else "Normal"
        events.append(Event(kind, condition["reason"],
                            f"{condition['type']}: {condition['message']}"[:1024]))
    return events


def headline_metrics(validate_result: Optional[dict]) -> Optional[dict]:
    """Return worstError and cosine from the validate stage's result metrics.

    The validate stage reports `max_abs_error` and `min_cosine` when it executed the Core
    ML program; otherwise the worst figures of its per-output ONNX Runtime comparison are
    used.
    """
    metrics = (validate_result or {}).get("metrics") or {}
    worst, cosine = metrics.get("max_abs_error"), metrics.get("min_cosine")
    outputs = metrics.get("coreml") or metrics.get("onnxruntime") or []
    if worst is None and outputs:
        worst = max(float(item.get("max_abs_error", 0.0)) for item in outputs)
    if cosine is None and outputs:
        cosine = min(float(item.get("cosine", 1.0)) for item in outputs)
    if worst is None and cosine is None:
        return None
    return {key: value for key, value in (("worstError", worst), ("cosine", cosine))
            if value is not None and value == value and abs(value) != float("inf")}


def release_status(publish_result: Optional[dict]) -> Optional[dict]:
    """Return status.release from the publish stage's result metrics."""
    metrics = (publish_result or {}).get("metrics") or {}
    if not metrics.get("location"):
        return None
    release = {"location": metrics["location"]}
    if metrics.get("manifest_sha256"):
        release["manifestDigest"] = f"sha256:{metrics['manifest_sha256']}"
    return release
