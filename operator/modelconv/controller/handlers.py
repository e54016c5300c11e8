"""Kopf handlers: thin triggers of `reconcile`, plus the indexes they read.

Every trigger reconciles the whole conversion, whatever changed:
- the ModelConversion changed (or the operator started and listed it);
- one of its Jobs or Pods changed (found through the conversion-uid label);
- the periodic re-check fired (image pull grace periods, missed events, store results);
- the device poll fired: while a device stage runs, its CoreMLCheck is read more often than
  the re-check interval, so a runner's result reaches the status within seconds.

Deleting a ModelConversion also deletes its CoreMLChecks in the runner pool namespace.

Kopf keeps three in-memory indexes, filled before any handler runs: conversions by
(namespace, uid), Job projections by conversion, Pod projections by Job name. Handler and
index ids are constants, because Kopf records handler ids on the objects it handles and
passes indexes to handlers as keyword arguments named by their ids.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from ..crd import PLURAL, VERSION
from ..spec import API_GROUP
from .config import OperatorConfig
from .device import delete_checks_of
from .jobs import LABEL_CONVERSION_UID, LABEL_MANAGED_BY, MANAGED_BY
from .observe import job_projection, pod_in_trouble, pod_projection
from .reconcile import Controller, reconcile
from .status import RUNNING

log = logging.getLogger(__name__)

HANDLER_CONVERSION_EVENT = "conversion-event"
HANDLER_JOB_EVENT = "job-event"
HANDLER_POD_EVENT = "pod-event"
HANDLER_RECHECK = "recheck"
HANDLER_DEVICE_POLL = "device-poll"
HANDLER_CONVERSION_DELETE = "conversion-delete"
INDEX_CONVERSIONS = "conversions_by_uid"
INDEX_JOBS = "jobs_by_conversion"
INDEX_PODS = "pods_by_job"
OWNED = {LABEL_MANAGED_BY: MANAGED_BY}
# Kopf's finalizer on every ModelConversion (its timer needs one).
FINALIZER = "modelconv.io/operator"


def _conversion_view(body: Any) -> dict:
    return {key: body.get(key) for key in ("apiVersion", "kind", "metadata", "spec", "status")}


def device_check_running(body: Any, **_: Any) -> bool:
    """Return whether the status shows a device stage waiting for its CoreMLCheck."""
    stages = (body.get("status") or {}).get("stages") or {}
    return (stages.get("device") or {}).get("state") == RUNNING


def _jobs_of(index: Any, namespace: str, uid: str) -> list[dict]:
    return list(index.get((namespace, uid), []))


def _pods_of(index: Any, namespace: str, jobs: list[dict]) -> dict[str, list[dict]]:
    return {job["name"]: list(index.get((namespace, job["name"]), [])) for job in jobs}


async def _reconcile_body(ctl: Controller, body: Any, namespace: str, uid: str,
                          indexes: dict) -> None:
    jobs = _jobs_of(indexes[INDEX_JOBS], namespace, uid)
    await reconcile(ctl, _conversion_view(body), jobs,
                    _pods_of(indexes[INDEX_PODS], namespace, jobs))


async def _reconcile_by_uid(ctl: Controller, namespace: str, uid: str, indexes: dict) -> None:
    for body in indexes[INDEX_CONVERSIONS].get((namespace, uid), []):
        jobs = _jobs_of(indexes[INDEX_JOBS], namespace, uid)
        await reconcile(ctl, body, jobs, _pods_of(indexes[INDEX_PODS], namespace, jobs))


def build_registry(ctl: Controller, config: OperatorConfig) -> kopf.OperatorRegistry:
    """Return a Kopf registry with the operator's handlers bound to `ctl`."""
    registry = kopf.OperatorRegistry()
    conversions = dict(group=API_GROUP, version=VERSION, plural=PLURAL, registry=registry)

    @kopf.index(**conversions, id=INDEX_CONVERSIONS)
    def conversions_by_uid(body: Any, namespace: str, uid: str, **_: Any) -> dict:
        return {(namespace, uid): _conversion_view(body)}

    @kopf.index("batch", "v1", "jobs", labels=OWNED, id=INDEX_JOBS, registry=registry)
    def jobs_by_conversion(body: Any, namespace: str, labels: Any, **_: Any) -> dict:
        return {(namespace, labels.get(LABEL_CONVERSION_UID)): job_projection(body)}

    @kopf.index("v1", "pods", labels=OWNED, id=INDEX_PODS, registry=registry)
    def pods_by_job(body: Any, namespace: str, **_: Any) -> dict:
        projection = pod_projection(body)
        return {(namespace, projection["job"]): projection}

    @kopf.on.event(**conversions, id=HANDLER_CONVERSION_EVENT)
    async def conversion_event(type: str, body: Any, namespace: str, uid: str,
                               **kwargs: Any) -> None:
        if type == "DELETED":
            ctl.forget(uid)
            return
        await _reconcile_body(ctl, body, namespace, uid, kwargs)

    @kopf.on.event("batch", "v1", "jobs", labels=OWNED, id=HANDLER_JOB_EVENT, registry=registry)
    async def job_event(namespace: str, labels: Any, **kwargs: Any) -> None:
        uid = labels.get(LABEL_CONVERSION_UID)
        if uid:
            await _reconcile_by_uid(ctl, namespace, uid, kwargs)

    @kopf.on.event("v1", "pods", labels=OWNED, id=HANDLER_POD_EVENT, registry=registry)
    async def pod_event(body: Any, namespace: str, labels: Any, **kwargs: Any) -> None:
        # Job events report a Pod's start and end. A Pod's own event matters only when it
        # shows trouble that its Job does not report (out of memory, image pulls).
        uid = labels.get(LABEL_CONVERSION_UID)
        if uid and pod_in_trouble(pod_projection(body)):
            await _reconcile_by_uid(ctl, namespace, uid, kwargs)

    @kopf.on.delete(**conversions, id=HANDLER_CONVERSION_DELETE)
    async def conversion_delete(name: str, namespace: str, **_: Any) -> None:
        # Owner references cannot reach a CoreMLCheck in another namespace, so the checks
        # go here, before Kopf removes its finalizer; an API error retries the handler.
        await delete_checks_of(ctl, namespace, name)

    @kopf.timer(**conversions, id=HANDLER_RECHECK, interval=config.recheck_interval,
                initial_delay=config.recheck_interval, backoff=config.recheck_interval)
    async def recheck(body: Any, namespace: str, uid: str, **kwargs: Any) -> None:
        await _reconcile_body(ctl, body, namespace, uid, kwargs)

    # Kopf watches one set of namespaces for every resource, and the pool namespace need not
    # be one of them (the pool Role grants no watch). So a running check is polled. Kopf
    # stops this timer once the status no longer shows the device stage running.
    @kopf.timer(**conversions, id=HANDLER_DEVICE_POLL, interval=config.device_poll_interval,
                initial_delay=config.device_poll_interval,
                backoff=config.device_poll_interval, when=device_check_running)
    async def device_poll(body: Any, namespace: str, uid: str, **kwargs: Any) -> None:
        await _reconcile_body(ctl, body, namespace, uid, kwargs)

    return registry


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf's diff base (the last handled spec) kept nowhere.

    Kopf stores it to tell a creation from an update for on.create and on.update handlers.
    The operator has none: reconciliation is level-based, and the delete handler depends
    only on the deletion timestamp. Storing it would cost one PATCH per ModelConversion.
    """

    def fetch(self, *, body: Any) -> None:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        pass


def operator_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    """Return Kopf's settings for the operator."""
    settings = kopf.OperatorSettings()
    # Kopf's own marks on the objects carry this project's prefix.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="modelconv.io")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.reporting_component = "modelconv-operator"
    settings.posting.event_name_prefix = "modelconv-"
    # Only the resources and namespaces given at start; watching CRDs and namespaces would
    # need cluster-wide rights the operator does not otherwise use.
    settings.scanning.disabled = True
    # Server-side filtering: the operator never sees Jobs and Pods that are not its own.
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    settings.watching.label_selectors["batch", "v1", "jobs"] = selector
    settings.watching.label_selectors["v1", "pods"] = selector
    return settings
