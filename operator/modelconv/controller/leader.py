"""Leader election over a `coordination.k8s.io/v1` Lease, so only one replica reconciles.

The rules follow client-go's leader election:
- a candidate takes the Lease when it has no holder, or when its record has not changed for
  `leaseDurationSeconds` as measured on the candidate's own monotonic clock (so clocks of
  different machines never need to agree);
- the leader renews every `retry_period`; when no renewal succeeded for `renew_deadline`
  (shorter than the lease duration) it must stop reconciling before anyone else may start;
- a leader that stops cleanly releases the Lease, so a standby takes over at once.

Every write carries the resourceVersion it read, so of two candidates at most one wins.
`decide` holds the rules and is pure; `LeaderElector` does the requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from typing import Callable, Optional

from .kube import ApiError, KubeClient, lease_path

log = logging.getLogger(__name__)

ACQUIRE = "acquire"
RENEW = "renew"
WAIT = "wait"


class LeadershipLost(Exception):
    """The leader could not renew its Lease in time; it must stop reconciling."""


@dataclasses.dataclass
class Observation:
    """The Lease record as last seen, and when (monotonic seconds) it last changed."""

    holder: str = ""
    renew_time: str = ""
    duration: float = 0.0
    changed_at: float = 0.0


def decide(lease: Optional[dict], identity: str, seen: Observation, now: float) -> str:
    """Return ACQUIRE, RENEW or WAIT for `identity` given the Lease and what was seen before.

    `seen` is updated in place when the record changed since the last look.
    """
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    record = (holder, spec.get("renewTime") or "", float(spec.get("leaseDurationSeconds") or 0))
    if record != (seen.holder, seen.renew_time, seen.duration):
        seen.holder, seen.renew_time, seen.duration = record
        seen.changed_at = now
    if lease is None or not holder:
        return ACQUIRE
    if holder == identity:
        return RENEW
    if now - seen.changed_at >= seen.duration:
        return ACQUIRE
    return WAIT


def micro_time(now: Optional[datetime.datetime] = None) -> str:
    """Return a Kubernetes MicroTime (RFC 3339 with microseconds)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquires, renews and releases one Lease on behalf of this process."""

    def __init__(self, kube: KubeClient, namespace: str, name: str, identity: str, *,
                 lease_duration: float, renew_deadline: float, retry_period: float,
                 clock: Callable[[], float] = time.monotonic):
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError(
                f"leader election needs retry period ({retry_period} s) < renew deadline "
                f"({renew_deadline} s) < lease duration ({lease_duration} s)")
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self.seen = Observation()
        self.last_renewal = 0.0

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process holds the Lease; return False when `stop` is set first."""
        log.info("waiting for the Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while not stop.is_set():
            if await self.try_acquire_or_renew():
                log.info("became the leader (Lease %s/%s)", self.namespace, self.name)
                return True
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.retry_period)
            except asyncio.TimeoutError:
                pass
        return False

    async def keep(self) -> None:
        """Renew the Lease forever; raise LeadershipLost when renewals fail for too long."""
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                renewed = await self.try_acquire_or_renew()
            except (ApiError, OSError, asyncio.TimeoutError) as error:
                # A failed renewal is retried until the renew deadline; log each one.
                log.warning("renewing the Lease %s/%s failed: %s", self.namespace, self.name, error)
                renewed = False
            if not renewed and self.clock() - self.last_renewal > self.renew_deadline:
                raise LeadershipLost(
                    f"the Lease {self.namespace}/{self.name} was not renewed for "
                    f"{self.renew_deadline:.0f} s; another replica may take over")

    async def try_acquire_or_renew(self) -> bool:
        """Make one attempt to take or renew the Lease; return whether this process holds it."""
        path = lease_path(self.namespace, self.name)
        try:
            lease: Optional[dict] = await self.kube.get(path)
        except ApiError as error:
            if not error.not_found:
                raise
            lease = None
        now = self.clock()
        action = decide(lease, self.identity, self.seen, now)
        if action == WAIT:
            return False
        body = self._record(lease, taking_over=action == ACQUIRE)
        try:
            if lease is None:
                await self.kube.create(lease_path(self.namespace), body)
            else:
                await self.kube.replace(path, body)
        except ApiError as error:
            if error.conflict:
                return False  # another candidate wrote first; read again next time
            raise
        self.last_renewal = now
        return True

    def _record(self, lease: Optional[dict], *, taking_over: bool) -> dict:
        spec = dict((lease or {}).get("spec") or {})
        timestamp = micro_time()
        if taking_over:
            spec["acquireTime"] = timestamp
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if lease else 0)
        spec.update(holderIdentity=self.identity, renewTime=timestamp,
                    leaseDurationSeconds=int(round(self.lease_duration)))
        metadata = {"name": self.name, "namespace": self.namespace}
        if lease is not None:
            metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": metadata, "spec": spec}

    async def release(self) -> None:
        """Give the Lease up so a standby takes over without waiting for it to expire."""
        path = lease_path(self.namespace, self.name)
        try:
            lease = await self.kube.get(path)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(holderIdentity="", leaseDurationSeconds=1, renewTime=micro_time())
            await self.kube.replace(path, lease)
            log.info("released the Lease %s/%s", self.namespace, self.name)
        except (ApiError, OSError, asyncio.TimeoutError) as error:
            # The Lease then expires on its own after leaseDurationSeconds.
            log.warning("releasing the Lease %s/%s failed: %s", self.namespace, self.name, error)
