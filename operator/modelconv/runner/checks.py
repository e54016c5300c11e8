"""Controller side of the runner pool: create, follow and settle CoreMLChecks.

The operator's device stage calls, in order:

1. `check_manifest(...)` then `create_check(...)`: an owned CoreMLCheck with presigned URLs
   for the package, inputs, expected outputs, report and compiled model. Creating again
   returns the existing check (its name is deterministic), so a restarted operator adopts it.
2. `evaluate_check(...)` on every reconcile: one read, at most one conditioned status write,
   never a wait. Its decision is the pure `step_check`, which the operator's asynchronous
   device stage wraps in its own reads and write. It fails a check past its deadline, requeues a check whose runner stopped
   sending heartbeats (or fails it with RunnerLost after `maxAttempts` claims) and reports
   NoRunnerAvailable when no live runner Lease matches the requirements.
3. `device_decision(evaluation, required)`: the DeviceVerified condition and whether the
   conversion may go on to publish. Only `coreml` results verify a device; a check that
   succeeded on `mil-reference` leaves DeviceVerified False with reason ReferenceOnly.

Staleness compares the runner's heartbeatTime with this process's clock (see `pool`).
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Mapping, Optional, Protocol, Sequence

from ..spec import API_GROUP, ConversionSpec, DeviceCheck
from .kube import CheckApi, Conflict, LeaseApi, NotFound
from .pool import RUNNER_SELECTOR, RunnerRecord, describe_requirements, runner_from_lease
from .pool import unmet_requirements
from .resource import (
    API_VERSION,
    CHECKS_PASSED,
    CLAIMED,
    COREML,
    DEADLINE_EXCEEDED,
    FAILED,
    KIND,
    NO_RUNNER_AVAILABLE,
    PENDING,
    RUNNER_ERROR,
    RUNNER_LOST,
    SUCCEEDED,
    CheckStatus,
    CoreMLCheck,
    PresignedObject,
    Requirements,
    UnitResult,
    utc_now,
)

# Time a check may take from creation to result, unless the caller sets another.
DEFAULT_TIMEOUT_SECONDS = 3600
# Presigned URLs outlive the deadline by this much, so a check claimed just before its
# deadline can still upload its report.
URL_MARGIN_SECONDS = 600
# A claim is stale after this many heartbeat intervals without a beat.
STALE_HEARTBEATS = 3
# Delay in seconds before the controller should look again, per state.
PENDING_RETRY_SECONDS = 5.0
NO_RUNNER_RETRY_SECONDS = 15.0
CONFLICT_RETRY_SECONDS = 1.0

CONVERSION_LABEL = f"{API_GROUP}/conversion"
CONVERSION_NAMESPACE_ANNOTATION = f"{API_GROUP}/conversion-namespace"
RUN_KEY_LABEL = f"{API_GROUP}/run-key"

# Evaluation states beyond the check's own (Pending, Claimed, Succeeded, Failed).
MISSING = "Missing"
REQUEUED = "Requeued"

# DeviceVerified condition reasons that only the controller side uses.
REFERENCE_ONLY = "ReferenceOnly"
SKIPPED = "Skipped"
CHECK_PENDING = "CheckPending"
CHECK_RUNNING = "CheckRunning"
# Failures that mean "no runner did the work", as opposed to "the model failed on a device".
RUNNER_ABSENCE_REASONS = frozenset({NO_RUNNER_AVAILABLE, RUNNER_LOST, DEADLINE_EXCEEDED})
# Reasons unrelated to the model: no runner did the check, or the runner itself failed.
RUNNER_SIDE_REASONS = RUNNER_ABSENCE_REASONS | {RUNNER_ERROR}


class Presigner(Protocol):
    """Makes presigned URLs for store keys."""

    def presign_get(self, key: str, expires_seconds: int) -> str: ...

    def presign_put(self, key: str, expires_seconds: int) -> str: ...


class S3Presigner:
    """Presigned URLs for keys of an `S3Store`, under the same prefix as its other objects.

    `endpoint_url` is where the runners reach the store, when that differs from the
    store's own endpoint (an in-cluster address that a Mac cannot resolve, say).
    """

    def __init__(self, store, endpoint_url: Optional[str] = None):
        self.store = store
        self._client = store.client_for_endpoint(endpoint_url) if endpoint_url else store.client

    def _object_key(self, key: str) -> str:
        from ..store import check_key

        check_key(key)
        return f"{self.store.prefix}/{key}" if self.store.prefix else key

    def _presign(self, method: str, key: str, expires_seconds: int) -> str:
        params = {"Bucket": self.store.bucket, "Key": self._object_key(key)}
        return self._client.generate_presigned_url(
            method, Params=params, ExpiresIn=expires_seconds
        )

    def presign_get(self, key: str, expires_seconds: int) -> str:
        return self._presign("get_object", key, expires_seconds)

    def presign_put(self, key: str, expires_seconds: int) -> str:
        return self._presign("put_object", key, expires_seconds)


@dataclasses.dataclass(frozen=True)
class CheckObjects:
    """Store keys of a check's files; the digests are verified by the runner when given."""

    package: str
    inputs: str
    expected_outputs: str
    report: str
    compiled_model: Optional[str] = None
    package_sha256: Optional[str] = None
    inputs_sha256: Optional[str] = None
    expected_outputs_sha256: Optional[str] = None


def check_name(conversion_name: str, run_key: str) -> str:
    """Return the deterministic check name for a conversion run (at most 63 characters)."""
    return f"{conversion_name[:42].rstrip('-')}-device-{run_key[:12]}"


def requirements_for(device: DeviceCheck) -> Requirements:
    """Return the runner requirements of a conversion's device check.

    A required check needs the coreml backend, because only coreml results can verify a
    device; an optional one accepts mil-reference runners too.
    """
    return Requirements(
        minimum_macos=device.minimum_macos,
        chip=device.chip,
        backend=COREML if device.required else None,
    )


def check_manifest(
    conversion: Mapping,
    spec: ConversionSpec,
    run_key: str,
    objects: CheckObjects,
    presigner: Presigner,
    *,
    namespace: str,
    now: Optional[datetime.datetime] = None,
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
    **settings,
) -> dict:
    """Return the CoreMLCheck manifest for one run of `conversion` (a ModelConversion dict).

    `namespace` is the pool namespace the runners watch. The check gets an ownerReference
    only when it lives in the conversion's namespace, because Kubernetes garbage-collects a
    dependent whose owner reference names another namespace. `settings` sets other spec
    fields by their Python names (warmup_runs, measured_runs, heartbeat_seconds,
    max_attempts).
    """
    now = now or utc_now()
    deadline = now + datetime.timedelta(seconds=timeout_seconds)
    url_seconds = timeout_seconds + URL_MARGIN_SECONDS
    expires = now + datetime.timedelta(seconds=url_seconds)

    def presigned(key: str, put: bool, sha256: Optional[str] = None) -> PresignedObject:
        sign = presigner.presign_put if put else presigner.presign_get
        return PresignedObject(url=sign(key, url_seconds), key=key, expires_at=expires,
                               sha256=sha256)

    validation = spec.validation
    check = CoreMLCheck(
        metadata=_metadata(conversion, run_key, namespace),
        spec={
            "package": presigned(objects.package, False, objects.package_sha256),
            "inputs": presigned(objects.inputs, False, objects.inputs_sha256),
            "expected_outputs": presigned(objects.expected_outputs, False,
                                          objects.expected_outputs_sha256),
            "report_upload": presigned(objects.report, True),
            "compiled_model_upload": (presigned(objects.compiled_model, True)
                                      if objects.compiled_model else None),
            "tolerances": {"atol": validation.atol, "rtol": validation.rtol,
                           "min_cosine": validation.min_cosine},
            "compute_units": list(validation.device.compute_units),
            "requirements": requirements_for(validation.device),
            "deadline": deadline,
            **settings,
        },
    )
    manifest = check.document()
    manifest.pop("status", None)
    return manifest


def _metadata(conversion: Mapping, run_key: str, namespace: str) -> dict:
    source = conversion.get("metadata") or {}
    name = source["name"]
    metadata = {
        "name": check_name(name, run_key),
        "namespace": namespace,
        "labels": {CONVERSION_LABEL: name, RUN_KEY_LABEL: run_key[:63]},
        "annotations": {CONVERSION_NAMESPACE_ANNOTATION: source.get("namespace") or namespace},
    }
    if source.get("namespace") == namespace and source.get("uid"):
        metadata["ownerReferences"] = [{
            "apiVersion": conversion.get("apiVersion", f"{API_GROUP}/v1alpha1"),
            "kind": conversion.get("kind", "ModelConversion"),
            "name": name,
            "uid": source["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }]
    return metadata


def create_check(client, manifest: dict) -> dict:
    """Create the check, or return the existing one of the same name (adoption)."""
    api = CheckApi(client, manifest["metadata"]["namespace"])
    try:
        return api.create(manifest)
    except Conflict:
        return api.get(manifest["metadata"]["name"])


def delete_check(client, namespace: str, name: str) -> None:
    """Delete a check (e.g. one skipped because no runner was available); absent is fine."""
    try:
        CheckApi(client, namespace).delete(name)
    except NotFound:
        pass


@dataclasses.dataclass(frozen=True)
class CheckEvaluation:
    """The state of a check as one look shows it, and when to look again."""

    state: str
    reason: str
    message: str
    retry_after: Optional[float] = None
    device_verified: bool = False
    results: tuple[UnitResult, ...] = ()
    report_key: Optional[str] = None
    compiled_model_key: Optional[str] = None
    runner: Optional[str] = None
    attempts: int = 0

    @property
    def final(self) -> bool:
        """True when the check will not change any more (Succeeded, Failed or Missing)."""
        return self.state in (SUCCEEDED, FAILED, MISSING)


@dataclasses.dataclass(frozen=True)
class CheckStep:
    """The decision of one look at a check: its evaluation and the status write it needs.

    `write` is a status to write conditioned on the check's resourceVersion. When that write
    loses a race, the evaluation is `if_conflict` (None: the same evaluation).
    """

    evaluation: CheckEvaluation
    write: Optional[CheckStatus] = None
    if_conflict: Optional[CheckEvaluation] = None

    def outcome(self, written: bool) -> CheckEvaluation:
        """Return the evaluation once the write (if any) succeeded or lost a race."""
        if written or self.write is None or self.if_conflict is None:
            return self.evaluation
        return self.if_conflict


def missing_check(namespace: str, name: str) -> CheckEvaluation:
    """Return the evaluation of a check that does not exist."""
    return CheckEvaluation(MISSING, "CheckMissing", f"CoreMLCheck {namespace}/{name} does not exist")


def needs_runners(obj: dict, now: datetime.datetime) -> bool:
    """Return True when `step_check` needs the live runners: a Pending check before its deadline."""
    check = CoreMLCheck.model_validate(obj)
    return check.status.state == PENDING and now < check.spec.deadline


def step_check(obj: dict, now: datetime.datetime,
               runners: Sequence[RunnerRecord] = ()) -> CheckStep:
    """Decide what a check's current object means and which status write it needs.

    Pure: no API calls. `runners` are the pool's live runners, needed only when
    `needs_runners(obj, now)` is True. `evaluate_check` and the operator's device stage
    both do the reads and the write around it.
    """
    check = CoreMLCheck.model_validate(obj)
    status = check.status
    if status.state in (SUCCEEDED, FAILED):
        return CheckStep(settled(check))
    if now >= check.spec.deadline:
        message = (f"no result by the deadline {check.spec.deadline.isoformat()}"
                   f" ({_progress(status)})")
        step = _failure(status, DEADLINE_EXCEEDED, message, now)
    elif status.state == CLAIMED:
        step = _follow_claim(check, now)
    else:
        step = _follow_pending(check, obj, runners)
    # Every evaluation carries the claims so far and the runner that has (or had) the claim.
    progress = {"attempts": status.attempts, "runner": status.runner}
    return dataclasses.replace(
        step, evaluation=dataclasses.replace(step.evaluation, **progress),
        if_conflict=step.if_conflict and dataclasses.replace(step.if_conflict, **progress))


def evaluate_check(client, namespace: str, name: str,
                   now: Optional[datetime.datetime] = None) -> CheckEvaluation:
    """Read a check once and make at most one status write (deadline, requeue, NoRunnerAvailable).

    It does not wait: `retry_after` gives the delay before the next call. A Pending check
    also costs one list of the pool's Leases.
    """
    now = now or utc_now()
    api = CheckApi(client, namespace)
    try:
        obj = api.get(name)
    except NotFound:
        return missing_check(namespace, name)
    runners = live_runners(client, namespace, now) if needs_runners(obj, now) else ()
    step = step_check(obj, now, runners)
    written = step.write is None or _write_status(api, obj, step.write)
    return step.outcome(written)


def settled(check: CoreMLCheck) -> CheckEvaluation:
    """Return the evaluation of a Succeeded or Failed check."""
    status = check.status
    verified = (
        status.state == SUCCEEDED
        and bool(status.results)
        and all(result.passed and result.backend == COREML for result in status.results)
    )
    return CheckEvaluation(
        state=status.state, reason=status.reason or status.state, message=status.message or "",
        device_verified=verified, results=tuple(status.results),
        report_key=status.report, compiled_model_key=status.compiled_model,
        runner=status.runner, attempts=status.attempts,
    )


def _progress(status: CheckStatus) -> str:
    if status.state == CLAIMED:
        return f"claimed by runner {status.runner}, attempt {status.attempts}"
    return f"never claimed after {status.attempts} attempts" if status.attempts else "never claimed"


def _follow_claim(check: CoreMLCheck, now: datetime.datetime) -> CheckStep:
    status = check.status
    last_beat = status.heartbeat_time or status.claim_time or now
    silent = (now - last_beat).total_seconds()
    limit = STALE_HEARTBEATS * check.spec.heartbeat_seconds
    if silent <= limit:
        return CheckStep(CheckEvaluation(
            CLAIMED, CHECK_RUNNING, f"runner {status.runner} is running attempt {status.attempts}",
            retry_after=float(check.spec.heartbeat_seconds)))
    detail = f"runner {status.runner} sent no heartbeat for {silent:.0f} s (limit {limit} s)"
    if status.attempts >= check.spec.max_attempts:
        return _failure(status, RUNNER_LOST,
                        f"{detail}; {status.attempts} of {check.spec.max_attempts} attempts used",
                        now)
    return _requeue(status, f"{detail}; requeued after attempt {status.attempts}")


def _requeue(status: CheckStatus, message: str) -> CheckStep:
    # Clearing claimId is what rejects the lost runner's late writes.
    requeued = status.model_copy(update={
        "state": PENDING, "runner": None, "claim_id": None, "claim_time": None,
        "heartbeat_time": None, "runner_labels": {}, "reason": RUNNER_LOST, "message": message,
    })
    return CheckStep(
        CheckEvaluation(REQUEUED, RUNNER_LOST, message, retry_after=PENDING_RETRY_SECONDS),
        write=requeued,
        if_conflict=CheckEvaluation(CLAIMED, CHECK_RUNNING, "the check changed; looking again",
                                    retry_after=CONFLICT_RETRY_SECONDS),
    )


def _failure(status: CheckStatus, reason: str, message: str,
             now: datetime.datetime) -> CheckStep:
    failed = status.model_copy(update={
        "state": FAILED, "claim_id": None, "completion_time": now,
        "reason": reason, "message": message,
    })
    return CheckStep(
        CheckEvaluation(FAILED, reason, message, results=tuple(status.results)),
        write=failed,
        if_conflict=CheckEvaluation(status.state, CHECK_PENDING,
                                    "the check changed; looking again",
                                    retry_after=CONFLICT_RETRY_SECONDS),
    )


def _write_status(api: CheckApi, obj: dict, status: CheckStatus) -> bool:
    """Write `status` conditioned on the object's resourceVersion; False on a conflict."""
    try:
        api.replace_status({**obj, "status": status.document()})
    except (Conflict, NotFound):
        return False
    return True


def _follow_pending(check: CoreMLCheck, obj: dict,
                    runners: Sequence[RunnerRecord]) -> CheckStep:
    requirements = check.spec.requirements
    matching = [runner for runner in runners
                if not unmet_requirements(requirements, runner.labels)]
    status = check.status
    namespace = (obj.get("metadata") or {}).get("namespace", "")
    if matching:
        evaluation = CheckEvaluation(PENDING, CHECK_PENDING,
                                     f"waiting for one of {len(matching)} matching runners",
                                     retry_after=PENDING_RETRY_SECONDS)
        if status.reason == NO_RUNNER_AVAILABLE:
            return CheckStep(evaluation, write=status.model_copy(
                update={"reason": None, "message": None}))
        return CheckStep(evaluation)
    if unmet_requirements(requirements, {}):
        message = (f"no live runner in namespace {namespace} matches "
                   f"{describe_requirements(requirements)}; start `modelconv agent` on a "
                   "matching Mac or relax validation.device")
    else:
        message = (f"no live runner in namespace {namespace}; start `modelconv agent` on a "
                   "Mac in this pool")
    evaluation = CheckEvaluation(NO_RUNNER_AVAILABLE, NO_RUNNER_AVAILABLE, message,
                                 retry_after=NO_RUNNER_RETRY_SECONDS)
    if status.reason != NO_RUNNER_AVAILABLE:
        return CheckStep(evaluation, write=status.model_copy(
            update={"reason": NO_RUNNER_AVAILABLE, "message": message}))
    return CheckStep(evaluation)


def live_runners(client, namespace: str,
                 now: Optional[datetime.datetime] = None) -> list[RunnerRecord]:
    """Return the runners of the pool namespace whose Lease is live."""
    now = now or utc_now()
    leases = LeaseApi(client, namespace).list(RUNNER_SELECTOR)
    return [record for record in map(runner_from_lease, leases) if record.is_live(now)]


@dataclasses.dataclass(frozen=True)
class DeviceDecision:
    """A DeviceVerified condition and the conversion's next step.

    `publish` is True (go on), False (the conversion fails at this stage) or None (wait and
    evaluate again after `retry_after` seconds).
    """

    status: str
    reason: str
    message: str
    publish: Optional[bool]
    retry_after: Optional[float] = None

    def condition(self) -> dict:
        """Return the condition fields the controller's condition helper stamps and stores."""
        return {"type": "DeviceVerified", "status": self.status, "reason": self.reason,
                "message": self.message}


def device_decision(evaluation: CheckEvaluation, required: bool) -> DeviceDecision:
    """Decide the DeviceVerified condition from an evaluation and `validation.device.required`.

    With `required: false`, a check that no runner could do (NoRunnerAvailable, RunnerLost,
    DeadlineExceeded) or that failed inside the runner (RunnerError) is Skipped, and the
    conversion publishes. A model that fails on a device fails the conversion either way.
    """
    if evaluation.state == SUCCEEDED:
        if evaluation.device_verified:
            return DeviceDecision("True", CHECKS_PASSED, evaluation.message, publish=True)
        return DeviceDecision(
            "False", REFERENCE_ONLY,
            f"{evaluation.message}; mil-reference results do not verify a device",
            publish=not required,
        )
    if evaluation.state in (NO_RUNNER_AVAILABLE, FAILED, MISSING):
        return _unfinished(evaluation, required)
    reason = CHECK_RUNNING if evaluation.state == CLAIMED else CHECK_PENDING
    return DeviceDecision("Unknown", reason, evaluation.message, publish=None,
                          retry_after=evaluation.retry_after)


def _unfinished(evaluation: CheckEvaluation, required: bool) -> DeviceDecision:
    absent = (evaluation.state == NO_RUNNER_AVAILABLE or evaluation.reason in RUNNER_SIDE_REASONS)
    if absent and not required:
        return DeviceDecision(
            "False", SKIPPED,
            f"{evaluation.message}; skipped because validation.device.required is false",
            publish=True,
        )
    if evaluation.state == NO_RUNNER_AVAILABLE:
        # Keep waiting: a runner may come back before the check's deadline.
        return DeviceDecision("False", NO_RUNNER_AVAILABLE, evaluation.message, publish=None,
                              retry_after=evaluation.retry_after)
    return DeviceDecision("False", evaluation.reason, evaluation.message, publish=False)


__all__ = [
    "API_VERSION", "KIND", "CheckEvaluation", "CheckObjects", "CheckStep", "DeviceDecision",
    "Presigner", "S3Presigner", "check_manifest", "check_name", "create_check", "delete_check",
    "device_decision", "evaluate_check", "live_runners", "missing_check", "needs_runners",
    "requirements_for", "settled", "step_check",
]
