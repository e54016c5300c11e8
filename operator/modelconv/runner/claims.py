"""Claiming a CoreMLCheck and every later write of the runner that holds the claim.

A claim is a status update conditioned on the resourceVersion the runner last saw, so when
several runners race for one Pending check the API server accepts exactly one write and
answers the others 409 Conflict. The winner stores a fresh `claimId` in the status.

Every later write of the runner (heartbeat, result, release) re-checks that the status
still names this runner and this claimId, and is itself conditioned on resourceVersion.
The controller clears `claimId` when it requeues a check whose heartbeat went stale, so
the late result of a runner that lost its claim (a Mac that slept, a partitioned network)
is rejected with `ClaimLost` instead of overwriting the result of the runner that took
over.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import uuid
from typing import Callable, Optional

from ..redaction import redact_urls
from .kube import CheckApi, Conflict, NotFound
from .resource import (
    CLAIMED,
    PENDING,
    CheckSpec,
    FAILED,
    SUCCEEDED,
    CheckStatus,
    UnitResult,
    status_of,
    utc_now,
)

log = logging.getLogger(__name__)

# A runner's own writes to one check are serialized, so conflicts come from the controller
# (requeue, deadline) or a deleted object; a few re-reads settle them.
MAX_CONFLICT_RETRIES = 5


class ClaimLost(Exception):
    """The check was requeued, taken by another runner or deleted: the write was not made."""


@dataclasses.dataclass(frozen=True)
class CheckOutcome:
    """A finished check as the runner reports it."""

    succeeded: bool
    reason: str
    message: str
    results: list[UnitResult] = dataclasses.field(default_factory=list)
    report_key: Optional[str] = None
    compiled_model_key: Optional[str] = None


def claim_check(
    api: CheckApi, obj: dict, runner: str, labels: dict[str, str]
) -> Optional["Claim"]:
    """Claim a Pending check for `runner`; return None when another writer came first.

    `obj` is the check as last seen (from a list or watch); the write is conditioned on
    its resourceVersion.
    """
    status = status_of(obj)
    if status.state != PENDING:
        return None
    now = utc_now()
    claim_id = uuid.uuid4().hex
    status_doc = status.model_copy(
        update={
            "state": CLAIMED,
            "runner": runner,
            "claim_id": claim_id,
            "claim_time": now,
            "heartbeat_time": now,
            "completion_time": None,
            "attempts": status.attempts + 1,
            "results": [],
            "reason": None,
            "message": None,
            "runner_labels": dict(labels),
        }
    ).document()
    body = {**copy.deepcopy(obj), "status": status_doc}
    try:
        written = api.replace_status(body)
    except (Conflict, NotFound):
        # Another runner claimed it, or the controller changed or deleted it: not ours.
        return None
    return Claim(api=api, name=obj["metadata"]["name"], runner=runner, claim_id=claim_id,
                 obj=written)


@dataclasses.dataclass
class Claim:
    """A check this runner holds; all writes go through `_write`, one at a time."""

    api: CheckApi
    name: str
    runner: str
    claim_id: str
    obj: dict
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    lost: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def spec(self) -> CheckSpec:
        return CheckSpec.model_validate(self.obj["spec"])

    @property
    def attempt(self) -> int:
        return status_of(self.obj).attempts

    def owns(self, status: CheckStatus) -> bool:
        """Return True when `status` still shows this claim."""
        return (
            status.state == CLAIMED
            and status.runner == self.runner
            and status.claim_id == self.claim_id
        )

    def heartbeat(self) -> None:
        """Renew the heartbeat; raise ClaimLost when the claim is gone."""
        self._write(lambda status: status.model_copy(update={"heartbeat_time": utc_now()}))

    def finish(self, outcome: CheckOutcome) -> None:
        """Write the outcome; raise ClaimLost when the claim is gone (the result is dropped)."""
        def mutate(status: CheckStatus) -> CheckStatus:
            return status.model_copy(
                update={
                    "state": SUCCEEDED if outcome.succeeded else FAILED,
                    "completion_time": utc_now(),
                    "heartbeat_time": utc_now(),
                    "results": list(outcome.results),
                    "reason": outcome.reason,
                    # Messages may quote a presigned URL from an exception's text.
                    "message": redact_urls(outcome.message or "") or outcome.message,
                    "report": outcome.report_key,
                    "compiled_model": outcome.compiled_model_key,
                }
            )

        self._write(mutate)

    def release(self, message: str) -> None:
        """Hand the check back to the pool unfinished; the claim does not count as an attempt."""

        def mutate(status: CheckStatus) -> CheckStatus:
            return status.model_copy(
                update={
                    "state": PENDING,
                    "runner": None,
                    "claim_id": None,
                    "claim_time": None,
                    "heartbeat_time": None,
                    "attempts": max(0, status.attempts - 1),
                    "runner_labels": {},
                    "message": redact_urls(message),
                }
            )

        self._write(mutate)

    def _write(self, mutate: Callable[[CheckStatus], CheckStatus]) -> None:
        with self.lock:
            for _ in range(MAX_CONFLICT_RETRIES):
                status = status_of(self.obj)
                if not self.owns(status):
                    self.lost.set()
                    raise ClaimLost(self._lost_message(status))
                body = copy.deepcopy(self.obj)
                body["status"] = mutate(status).document()
                try:
                    self.obj = self.api.replace_status(body)
                    return
                except Conflict:
                    # Someone else wrote in between: re-read, then check ownership again.
                    self._reread()
                except NotFound:
                    self.lost.set()
                    raise ClaimLost(f"check {self.name} was deleted") from None
            raise Conflict(f"check {self.name}: {MAX_CONFLICT_RETRIES} conflicting writes in a row")

    def _reread(self) -> None:
        try:
            self.obj = self.api.get(self.name)
        except NotFound:
            self.lost.set()
            raise ClaimLost(f"check {self.name} was deleted") from None

    def _lost_message(self, status: CheckStatus) -> str:
        if status.state == CLAIMED and status.runner != self.runner:
            holder = f"runner {status.runner}"
        elif status.state == CLAIMED:
            holder = "a newer claim of this runner"
        else:
            holder = f"state {status.state}"
        return f"check {self.name} is no longer claimed by this runner (now: {holder})"
