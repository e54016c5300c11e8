"""Retrying a failed run without a spec change: the `modelconv.io/retry` annotation.

A failed stage stays failed for the rest of its run, because running the same Job again
usually fails the same way. When the cause was outside the spec (a store outage, a node
that ran out of disk), a user sets the annotation to a new value:

    kubectl annotate mconv NAME modelconv.io/retry="$(date +%s)" --overwrite

`status.retry` records the last value the operator saw and `status.retries` counts the runs
that a new value started. The count is part of the run hash, so a retry is a new run of the
same generation: new Job names, the failed run's Jobs and ConfigMap deleted. The stages that
had succeeded keep their records (a finished training run is not repeated), and the others
run again, reading the store cache first.

A new value counts only while a stage of the current run has failed. Set at any other time
(while the run goes on, after it succeeded, together with a spec change), it is recorded and
starts nothing, so an old value never restarts a later failure by surprise.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Optional

from . import status as st

ANNOTATION_RETRY = "modelconv.io/retry"
# Longer annotation values are recorded in status as their sha256, to keep status small.
MAX_RECORDED_LENGTH = 128


@dataclasses.dataclass(frozen=True)
class RetryState:
    """The retry annotation as seen by one reconcile pass."""

    requested: Optional[str]  # the annotation's value now
    retries: int  # runs started by the annotation, including one started now
    started_now: bool


def retry_state(body: Any, previous: dict, generation: int) -> RetryState:
    """Return the retry state of this pass; `previous` is the status last written."""
    annotations = body["metadata"].get("annotations") or {}
    requested = annotations.get(ANNOTATION_RETRY)
    if requested is not None and len(requested) > MAX_RECORDED_LENGTH:
        requested = "sha256:" + hashlib.sha256(requested.encode()).hexdigest()
    retries = previous.get("retries") or 0
    changed = bool(requested) and requested != previous.get("retry")
    if changed and run_failed(previous, generation):
        return RetryState(requested, retries + 1, True)
    return RetryState(requested, retries, False)


def run_failed(previous: dict, generation: int) -> bool:
    """Return whether a stage of the run of `generation` recorded in `previous` failed."""
    if previous.get("observedGeneration") != generation or not previous.get("runHash"):
        return False
    stages = previous.get("stages") or {}
    return any(record.get("state") == st.FAILED for record in stages.values())


def kept_records(previous: dict) -> dict:
    """Return the stage records of the failed run that a retry keeps: those that finished."""
    stages = previous.get("stages") or {}
    return {name: record for name, record in stages.items()
            if record.get("state") in (st.SUCCEEDED, st.SKIPPED)}
