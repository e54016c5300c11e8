"""The status of a ModelConversion: its typed shape, condition types and reasons, and the
one helper that sets conditions.

The models here generate the status schema of the CRD (see `modelconv.crd`); the controller
builds status as plain JSON values with the same field names.

Conditions follow the Kubernetes API conventions: keyed by `type`; `status` is True, False
or Unknown; `reason` is CamelCase; `lastTransitionTime` moves only when `status` changes;
`observedGeneration` records the generation the condition was computed from.
"""

from __future__ import annotations

import datetime
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ..redaction import redact_urls

# Condition type of each stage, and the summary condition.
STAGE_CONDITIONS = {
    "train": "Trained",
    "export": "Exported",
    "convert": "Converted",
    "validate": "Validated",
    "device": "DeviceVerified",
    "publish": "Published",
}
READY = "Ready"

# Stage states in status.stages.
PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SKIPPED = "Skipped"

# Condition reasons set by the controller. Failure reasons reported by a stage itself
# (ToleranceExceeded, UnsupportedOperator, ...) come from modelconv.errors and are passed on.
REASON_PENDING = "Pending"
REASON_RUNNING = "Running"
REASON_SUCCEEDED = "Succeeded"
REASON_CACHE_HIT = "CacheHit"
REASON_SKIPPED = "Skipped"
REASON_IN_PROGRESS = "InProgress"
REASON_PUBLISHED = "Published"
REASON_NO_RUNNER = "NoRunnerAvailable"
REASON_OUT_OF_MEMORY = "OutOfMemory"
REASON_IMAGE_PULL = "ImagePullFailed"
REASON_CONTAINER_CONFIG = "ContainerConfigFailed"
REASON_POD_NOT_CREATED = "PodNotCreated"
REASON_RETRIES_EXHAUSTED = "RetriesExhausted"
REASON_DEADLINE_EXCEEDED = "DeadlineExceeded"
REASON_STAGE_FAILED = "StageFailed"
REASON_RESULT_MISSING = "ResultMissing"
REASON_JOB_NAME_CONFLICT = "JobNameConflict"
REASON_STORE_NOT_CONFIGURED = "StoreNotConfigured"
REASON_INVALID_SPEC = "InvalidSpec"

ConditionStatus = Literal["True", "False", "Unknown"]


class StatusModel(BaseModel):
    """Base of the status models: camelCase names, unknown fields rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Condition(StatusModel):
    """One observation of the resource's state, as the Kubernetes API conventions define it."""

    type: str = Field(max_length=64, description="Condition type, e.g. Converted or Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=128, description="CamelCase reason of the last transition.")
    message: str = Field(default="", max_length=4096, description="What happened and what to do.")
    observed_generation: int = Field(
        default=0, ge=0, description="metadata.generation the condition was computed from."
    )
    last_transition_time: str = Field(
        max_length=64, description="When status last changed (RFC 3339)."
    )


class DeviceResult(StatusModel):
    """The on-device outcome on one compute unit, copied from the CoreMLCheck's status."""

    backend: str = Field(max_length=32, description="coreml or mil-reference.")
    compute_unit: Optional[str] = Field(
        default=None, max_length=32, description="Compute unit measured (coreml only)."
    )
    passed: bool = Field(description="Every output of every sample met the tolerances.")
    max_abs_error: Optional[float] = Field(default=None, description="Largest absolute error.")
    cosine: Optional[float] = Field(default=None, description="Lowest cosine similarity.")
    latency_p50_ms: Optional[float] = Field(default=None, description="Median prediction time.")
    latency_p90_ms: Optional[float] = Field(default=None, description="90th percentile.")
    load_ms: Optional[float] = Field(default=None, description="Time to load the model.")
    compile_ms: Optional[float] = Field(default=None, description="Time to compile (coreml).")
    reason: Optional[str] = Field(default=None, max_length=64, description="Why it failed.")


class StageStatus(StatusModel):
    """Progress of one stage in the current run."""

    state: Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"] = Field(
        description="Pending, Running, Succeeded, Failed or Skipped."
    )
    key: Optional[str] = Field(default=None, max_length=64, description="Cache key of the stage.")
    job: Optional[str] = Field(default=None, max_length=63, description="Name of the stage's Job.")
    cache_hit: bool = Field(
        default=False, description="True when the result came from the store cache, without a Job."
    )
    attempts: int = Field(default=0, ge=0, description="Pods the Job started so far.")
    started: Optional[str] = Field(default=None, max_length=64, description="Start (RFC 3339).")
    finished: Optional[str] = Field(default=None, max_length=64, description="End (RFC 3339).")
    reason: Optional[str] = Field(default=None, max_length=128, description="Failure reason.")
    message: Optional[str] = Field(
        default=None, max_length=4096, description="The stage's result or failure message."
    )
    run_id: Optional[str] = Field(
        default=None, max_length=64, description="uid of the succeeded training Job (train only)."
    )
    check: Optional[str] = Field(
        default=None, max_length=127,
        description="namespace/name of the CoreMLCheck of the run (device only).",
    )
    runner: Optional[str] = Field(
        default=None, max_length=253, description="Runner that produced the results (device only)."
    )
    results: Optional[list[DeviceResult]] = Field(
        default=None, max_length=8, description="Results per compute unit (device only)."
    )
    report: Optional[str] = Field(
        default=None, max_length=2048, description="Store URL of the device report (device only)."
    )
    compiled_model: Optional[str] = Field(
        default=None, max_length=2048,
        description="Store URL of the zipped .mlmodelc a runner compiled (device only).",
    )


class StagesStatus(StatusModel):
    """Progress of each planned stage."""

    train: Optional[StageStatus] = Field(default=None, description="The training Job.")
    export: Optional[StageStatus] = Field(default=None, description="PyTorch to ONNX export.")
    convert: Optional[StageStatus] = Field(default=None, description="Conversion to Core ML.")
    validate_: Optional[StageStatus] = Field(
        default=None, alias="validate", description="Numerical validation on Linux."
    )
    device: Optional[StageStatus] = Field(default=None, description="On-device check.")
    publish: Optional[StageStatus] = Field(default=None, description="Release publishing.")


class ReleaseStatus(StatusModel):
    """The published release."""

    location: str = Field(max_length=2048, description="Folder of the release in the store.")
    manifest_digest: Optional[str] = Field(
        default=None, max_length=80, description="sha256 of manifest.json, the commit marker."
    )
    model: Optional[str] = Field(default=None, max_length=64, description="Model name.")
    version: Optional[str] = Field(default=None, max_length=64, description="Release version.")


class HeadlineMetrics(StatusModel):
    """Validation figures shown by `kubectl get`."""

    worst_error: Optional[float] = Field(
        default=None, description="Largest absolute error over all outputs and samples."
    )
    cosine: Optional[float] = Field(
        default=None, description="Smallest cosine similarity over all outputs."
    )
    device_latency_p50_ms: Optional[float] = Field(
        default=None,
        description="Median Core ML prediction time on a device, fastest compute unit (coreml "
                    "results only).",
    )


class ConversionStatus(StatusModel):
    """Observed state of a ModelConversion, written by the operator."""

    observed_generation: Optional[int] = Field(
        default=None, ge=0, description="metadata.generation of the spec the current run uses."
    )
    run_hash: Optional[str] = Field(
        default=None, max_length=64, description="Hash of the current run's spec and settings."
    )
    source_version: Optional[str] = Field(
        default=None, max_length=256, description="Version (ETag) of the source the run read."
    )
    stage: Optional[str] = Field(
        default=None, max_length=32,
        description="The stage running now, the failed stage, Done, or Invalid for a spec the "
                    "operator rejects.",
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="Stage conditions and Ready."
    )
    stages: Optional[StagesStatus] = Field(default=None, description="Progress per stage.")
    release: Optional[ReleaseStatus] = Field(default=None, description="The published release.")
    metrics: Optional[HeadlineMetrics] = Field(default=None, description="Headline figures.")
    retry: Optional[str] = Field(
        default=None, max_length=136,
        description="Value of the modelconv.io/retry annotation the operator saw last "
        "(its sha256 when longer than 128 characters).",
    )
    retries: Optional[int] = Field(
        default=None, ge=0,
        description="Runs the retry annotation started; part of the run hash.",
    )


def now_rfc3339(now: Optional[datetime.datetime] = None) -> str:
    """Return `now` (default: the current UTC time) as RFC 3339 with second precision."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(
    conditions: list[dict],
    type_: str,
    status: str,
    reason: str,
    message: str,
    *,
    generation: int,
    now: str,
) -> list[dict]:
    """Return `conditions` with the condition `type_` set; the input list is not changed.

    `lastTransitionTime` becomes `now` only when the condition is new or its status changes;
    a new reason or message alone keeps the previous time. Every condition set here is
    stamped with `generation`.
    """
    previous = next((item for item in conditions if item.get("type") == type_), None)
    if previous is not None and previous.get("status") == status:
        transition = previous.get("lastTransitionTime") or now
    else:
        transition = now
    condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        # Stage messages may quote a user's URL: no credentials in the status.
        "message": redact_urls(message)[:4096],
        "observedGeneration": generation,
        "lastTransitionTime": transition,
    }
    updated = [item for item in conditions if item.get("type") != type_]
    updated.append(condition)
    return sorted(updated, key=_condition_order)


def _condition_order(condition: dict) -> int:
    order = list(STAGE_CONDITIONS.values()) + [READY]
    kind = condition.get("type")
    return order.index(kind) if kind in order else len(order)


def find_condition(conditions: list[dict], type_: str) -> Optional[dict]:
    return next((item for item in conditions or [] if item.get("type") == type_), None)
