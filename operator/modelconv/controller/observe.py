"""Reading a stage's state from its Job, the Job's Pods and the stage's result.

Kopf indexes keep a small projection of every Job and Pod the operator made (see
`job_projection`, `pod_projection`); the functions here turn those projections into a
`JobOutcome`: still running, succeeded, or failed with a CamelCase reason and a message
that tells the user what to do. They are pure, so unit tests feed them plain dicts.

Failure reasons, in the order they are checked:
- a container OOMKilled -> OutOfMemory, naming the memory limit;
- a container stuck pulling its image past the grace period -> ImagePullFailed;
- a container that cannot be created past the same grace period (a missing Secret or
  ConfigMap, say) -> ContainerConfigFailed;
- a Job, not suspended, that has had no pod for the same grace period since its creation (a
  missing ServiceAccount, a ResourceQuota or an admission webhook rejects its pods)
  -> PodNotCreated;
- the Job failed -> DeadlineExceeded when it ran out of time, else the stage's own reason
  from its termination message (a JSON line, docs/stage-contract.md), else
  RetriesExhausted (backoffLimit reached) or StageFailed.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any, Iterable, Optional

from . import status as st
from .jobs import LABEL_CONVERSION_UID, LABEL_RUN, LABEL_STAGE

IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                      "ErrImageNeverPull")
CONTAINER_CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError")
MAX_MESSAGE = 1024


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """Outcome of a stage Job: `state` is Running, Succeeded or Failed."""

    state: str
    reason: str = ""
    message: str = ""
    attempts: int = 0
    finished: Optional[str] = None
    # Whether the operator should delete the Job to stop it (it would only fail again).
    stop: bool = False


def job_projection(body: Any) -> dict:
    """Return the few fields of a Job that the controller reads."""
    metadata, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    labels = metadata.get("labels") or {}
    owner = next((ref["uid"] for ref in metadata.get("ownerReferences") or []
                  if ref.get("controller")), None)
    return {
        "name": metadata["name"],
        "namespace": metadata["namespace"],
        "uid": metadata.get("uid"),
        "owner": owner,
        "conversionUid": labels.get(LABEL_CONVERSION_UID),
        "run": labels.get(LABEL_RUN),
        "stage": labels.get(LABEL_STAGE),
        "created": metadata.get("creationTimestamp"),
        # A suspended Job (a queue such as Kueue admits it later) has no pods on purpose, and
        # its startTime is set again when it resumes. NOTE: checked with hand-made Job
        # bodies only, not with a queue controller.
        "suspended": bool(spec.get("suspend")),
        "startTime": status.get("startTime"),
        "deleting": bool(metadata.get("deletionTimestamp")),
        "conditions": [
            {key: condition.get(key) for key in ("type", "status", "reason", "message")}
            for condition in status.get("conditions") or []
        ],
        "active": status.get("active") or 0,
        "failed": status.get("failed") or 0,
        "succeeded": status.get("succeeded") or 0,
        "completionTime": status.get("completionTime"),
        "limits": _memory_limit(spec),
    }


def _memory_limit(job_spec: dict) -> Optional[str]:
    containers = ((job_spec.get("template") or {}).get("spec") or {}).get("containers") or []
    for container in containers:
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        if limit:
            return str(limit)
    return None


def pod_projection(body: Any) -> dict:
    """Return the container states of a Pod that the controller reads."""
    metadata, status = body["metadata"], body.get("status") or {}
    labels = metadata.get("labels") or {}
    containers = []
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        last = container.get("lastState") or {}
        containers.append({
            "name": container.get("name"),
            "waiting": _pick(state.get("waiting"), ("reason", "message")),
            "terminated": _pick(state.get("terminated"), ("reason", "exitCode", "message")),
            "lastTerminated": _pick(last.get("terminated"), ("reason", "exitCode", "message")),
        })
    return {
        "name": metadata["name"],
        "job": labels.get("batch.kubernetes.io/job-name") or labels.get("job-name"),
        "created": metadata.get("creationTimestamp"),
        "phase": status.get("phase"),
        "containers": containers,
    }


def pod_in_trouble(pod: dict) -> bool:
    """Return whether a container of the Pod was OOMKilled, or cannot pull its image or start."""
    for container in pod["containers"]:
        waiting = container["waiting"] or {}
        if waiting.get("reason") in IMAGE_PULL_REASONS + CONTAINER_CONFIG_REASONS:
            return True
        for state in (container["terminated"], container["lastTerminated"]):
            if state and state.get("reason") == "OOMKilled":
                return True
    return False


def _pick(mapping: Optional[dict], keys: Iterable[str]) -> Optional[dict]:
    if not mapping:
        return None
    return {key: mapping.get(key) for key in keys}


def _condition(job: dict, kind: str) -> Optional[dict]:
    return next((item for item in job["conditions"]
                 if item.get("type") == kind and item.get("status") == "True"), None)


def parse_time(text: Optional[str]) -> Optional[datetime.datetime]:
    if not text:
        return None
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)


def job_outcome(job: dict, pods: list[dict], *, now: datetime.datetime,
                image_pull_grace: float) -> JobOutcome:
    """Return the outcome of a stage Job from its projection and its Pods' projections."""
    attempts = max(job["active"] + job["failed"] + job["succeeded"], len(pods))
    if _condition(job, "Complete") is not None:
        return JobOutcome(st.SUCCEEDED, attempts=attempts, finished=job.get("completionTime"))
    oom = _out_of_memory(job, pods)
    if oom is not None:
        return dataclasses.replace(oom, attempts=attempts, stop=_condition(job, "Failed") is None)
    failed = _condition(job, "Failed")
    if failed is not None:
        reason, message = _failure(job, failed, pods)
        return JobOutcome(st.FAILED, reason, message, attempts)
    pull = _image_pull_failure(pods, now, image_pull_grace)
    if pull is not None:
        return dataclasses.replace(pull, attempts=attempts, stop=True)
    if attempts == 0 and not job.get("suspended") and _age(job, now) >= image_pull_grace:
        return JobOutcome(st.FAILED, st.REASON_POD_NOT_CREATED, (
            f"Job {job['name']} has had no pod for {image_pull_grace:.0f} s; the Job "
            "controller's events say why (`kubectl get events -n "
            f"{job['namespace']} --field-selector involvedObject.name={job['name']}`): a "
            "missing ServiceAccount, which the operator's --stage-service-account names, a "
            "ResourceQuota or an admission webhook. Fix it, then retry with the "
            "modelconv.io/retry annotation"), stop=True)
    return JobOutcome(st.RUNNING, attempts=attempts)


def _age(job: dict, now: datetime.datetime) -> float:
    """Return the seconds since the Job started (else since its creation), 0 without a time."""
    started = parse_time(job.get("startTime") or job.get("created"))
    return 0.0 if started is None else (now - started).total_seconds()


def _out_of_memory(job: dict, pods: list[dict]) -> Optional[JobOutcome]:
    for pod in pods:
        for container in pod["containers"]:
            for state in (container["terminated"], container["lastTerminated"]):
                if state and state.get("reason") == "OOMKilled":
                    limit = job.get("limits") or "its memory limit"
                    return JobOutcome(st.FAILED, st.REASON_OUT_OF_MEMORY, (
                        f"container {container['name']} of pod {pod['name']} ran out of memory "
                        f"(limit {limit}); raise resources.limits.memory for this stage in "
                        "spec.stages.<stage>.resources or spec.resources"))
    return None


def _image_pull_failure(pods: list[dict], now: datetime.datetime,
                        grace: float) -> Optional[JobOutcome]:
    for pod in pods:
        created = parse_time(pod.get("created"))
        if created is None or (now - created).total_seconds() < grace:
            continue
        for container in pod["containers"]:
            waiting = container["waiting"]
            if waiting and waiting.get("reason") in IMAGE_PULL_REASONS:
                detail = (waiting.get("message") or "")[:MAX_MESSAGE]
                return JobOutcome(st.FAILED, st.REASON_IMAGE_PULL, (
                    f"pod {pod['name']} could not pull the image of container "
                    f"{container['name']} for {grace:.0f} s ({waiting['reason']}: {detail}); "
                    "check the image name and the pull secret").strip())
            if waiting and waiting.get("reason") in CONTAINER_CONFIG_REASONS:
                detail = (waiting.get("message") or "")[:MAX_MESSAGE]
                return JobOutcome(st.FAILED, st.REASON_CONTAINER_CONFIG, (
                    f"pod {pod['name']} could not create container {container['name']} for"
                    f" {grace:.0f} s ({waiting['reason']}: {detail}); create what it names in"
                    " the conversion's namespace (the operator's --store-secret names the"
                    " store Secret), then retry with the modelconv.io/retry annotation"))
    return None


def _failure(job: dict, failed: dict, pods: list[dict]) -> tuple[str, str]:
    summary = termination_summary(pods)
    job_reason = failed.get("reason") or ""
    if job_reason == "DeadlineExceeded":
        return st.REASON_DEADLINE_EXCEEDED, (
            f"Job {job['name']} ran longer than its activeDeadlineSeconds; raise "
            "spec.stages.<stage>.activeDeadlineSeconds or give the stage more resources")
    if job_reason == "BackoffLimitExceeded":
        # A transient failure that kept happening: the stage's own reason names it.
        reason, detail = summary or (st.REASON_RETRIES_EXHAUSTED, last_log_line(pods))
        return reason, (f"Job {job['name']} failed {job['failed']} times, the last time with: "
                        f"{detail or failed.get('message') or 'no message'}")
    if summary is not None:
        return summary
    return st.REASON_STAGE_FAILED, (
        f"Job {job['name']} failed ({job_reason}): {failed.get('message') or ''}; "
        f"last log line: {last_log_line(pods) or 'none'}")


def termination_summary(pods: list[dict]) -> Optional[tuple[str, str]]:
    """Return (reason, message) from the newest JSON termination message, if any."""
    for pod in sorted(pods, key=lambda item: item.get("created") or "", reverse=True):
        for container in pod["containers"]:
            for state in (container["terminated"], container["lastTerminated"]):
                parsed = _summary(state)
                if parsed is not None:
                    return parsed
    return None


def _summary(state: Optional[dict]) -> Optional[tuple[str, str]]:
    if not state or not state.get("message"):
        return None
    for line in reversed(state["message"].strip().splitlines()):
        try:
            summary = json.loads(line)
        except ValueError:
            continue
        if isinstance(summary, dict) and summary.get("reason"):
            return str(summary["reason"]), str(summary.get("message") or "")[:MAX_MESSAGE]
    return None


def last_log_line(pods: list[dict]) -> str:
    """Return the last line of the newest termination message (the log tail on errors)."""
    for pod in sorted(pods, key=lambda item: item.get("created") or "", reverse=True):
        for container in pod["containers"]:
            for state in (container["terminated"], container["lastTerminated"]):
                if state and state.get("message"):
                    return state["message"].strip().splitlines()[-1][:MAX_MESSAGE]
    return ""


def result_outcome(result: dict) -> tuple[str, str, str]:
    """Return (state, reason, message) of a stage from its result.json."""
    message = str(result.get("message") or "")[:MAX_MESSAGE]
    if result.get("succeeded"):
        return st.SUCCEEDED, "", message
    return st.FAILED, str(result.get("reason") or st.REASON_STAGE_FAILED), message
