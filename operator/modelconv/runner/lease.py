"""The agent's Lease: its registration in the pool and its liveness signal.

One Lease per runner name. `holderIdentity` is the identity of the running agent process,
so a second agent started with the same name while the first one is alive is rejected
instead of silently sharing its registration. Every write is conditioned on the Lease's
resourceVersion.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import uuid
from typing import Mapping, Optional

from .kube import Conflict, LeaseApi, NotFound
from .pool import CONCURRENCY_ANNOTATION, runner_from_lease
from .resource import timestamp, utc_now

log = logging.getLogger(__name__)


class RunnerNameTaken(Exception):
    """Another live agent holds the Lease of this runner name."""


def process_identity() -> str:
    """Return an identity unique to this agent process: host, pid and a random suffix."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class RunnerLease:
    """Create, renew and release one runner's Lease."""

    def __init__(self, api: LeaseApi, name: str, labels: Mapping[str, str],
                 duration_seconds: int, concurrency: int, identity: Optional[str] = None):
        self.api = api
        self.name = name
        self.labels = dict(labels)
        self.duration_seconds = duration_seconds
        self.concurrency = concurrency
        self.identity = identity or process_identity()
        self._lease: Optional[dict] = None

    def acquire(self) -> None:
        """Register: create the Lease, or take over one whose holder is gone."""
        try:
            current = self.api.get(self.name)
        except NotFound:
            self._lease = self.api.create(self._body(None, acquired=True))
            log.info("registered runner %s (new Lease)", self.name)
            return
        record = runner_from_lease(current)
        if record.holder and record.holder != self.identity and record.is_live(utc_now()):
            raise RunnerNameTaken(
                f"runner name {self.name!r} is held by a live agent ({record.holder}); stop it "
                "or start this agent with another --name"
            )
        try:
            self._lease = self.api.replace(self._body(current, acquired=True))
        except Conflict:
            raise RunnerNameTaken(
                f"another agent registered as {self.name!r} at the same moment; choose another "
                "--name"
            ) from None
        log.info("registered runner %s (took over its Lease)", self.name)

    def renew(self) -> None:
        """Move renewTime to now; raise RunnerNameTaken when another agent took the Lease."""
        if self._lease is None:
            raise RuntimeError("renew() before acquire()")
        try:
            self._lease = self.api.replace(self._body(self._lease, acquired=False))
        except (Conflict, NotFound):
            self._take_back()

    def _take_back(self) -> None:
        # Someone changed or deleted the Lease: keep it only while it still names this process.
        try:
            current = self.api.get(self.name)
        except NotFound:
            self._lease = self.api.create(self._body(None, acquired=True))
            return
        holder = (current.get("spec") or {}).get("holderIdentity")
        if holder != self.identity:
            raise RunnerNameTaken(f"the Lease of runner {self.name!r} now names {holder!r}")
        self._lease = self.api.replace(self._body(current, acquired=False))

    def release(self) -> None:
        """Clear holderIdentity so the runner stops counting as live; errors are logged."""
        if self._lease is None:
            return
        body = copy.deepcopy(self._lease)
        body["spec"]["holderIdentity"] = None
        try:
            self.api.replace(body)
            log.info("released the Lease of runner %s", self.name)
        except Exception as error:  # the agent is exiting; the Lease expires on its own
            log.warning("could not release the Lease of runner %s: %s", self.name, error)

    def _body(self, current: Optional[dict], acquired: bool) -> dict:
        now = timestamp(utc_now())
        body = copy.deepcopy(current) if current else {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name},
            "spec": {},
        }
        metadata = body["metadata"]
        metadata["labels"] = dict(self.labels)
        metadata["annotations"] = {
            **(metadata.get("annotations") or {}),
            CONCURRENCY_ANNOTATION: str(self.concurrency),
        }
        spec = body["spec"]
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = self.duration_seconds
        spec["renewTime"] = now
        if acquired:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if current else 0)
        return body
