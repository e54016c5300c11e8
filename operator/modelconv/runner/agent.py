"""`modelconv agent`: the runner process that pulls CoreMLChecks through the Kubernetes API.

Threads, each with one job:
- the lease thread renews the runner's Lease every third of its duration;
- the watch thread lists the pool namespace's checks, then watches them, and keeps the set
  of Pending checks this runner can serve (requirements against its labels and backend);
- the main thread claims candidates while fewer than `concurrency` checks are in flight;
- one worker thread per claimed check runs it, with a heartbeat thread beside it.

On SIGTERM the agent stops claiming, lets running checks finish for up to `drain_seconds`,
releases the ones still running back to Pending, clears its Lease and exits.

Failure classes:
- a lost claim race (409) is normal and logged at DEBUG;
- API or network faults of the watch are retried with capped exponential backoff. After
  `max_watch_failures` in a row the agent exits non-zero, so its supervisor (launchd)
  restarts it;
- a check that fails is reported in its status; `_work` catches every error of a check.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Optional

from pydantic import ValidationError

from ..store import redact_url
from .artifacts import http_session
from .backends import Backend, CheckCancelled
from .claims import CheckOutcome, Claim, ClaimLost, claim_check
from .execution import CheckContext, execute_check
from .kube import CheckApi, LeaseApi, describe_api_error
from .lease import RunnerLease, RunnerNameTaken
from .pool import BACKEND_LABEL, lease_labels, unmet_requirements
from .resource import PENDING, RUNNER_ERROR, CheckSpec, status_of, utc_now

log = logging.getLogger(__name__)

# Seconds a stopping agent waits for the workers of released checks to end.
WORKER_STOP_SECONDS = 10.0

# Each agent picks among the oldest candidates by rendezvous hashing (the lowest hash of
# runner name and check name), so agents watching the same namespace mostly try different
# checks instead of racing for the oldest one.
CLAIM_WINDOW = 16
MAX_BACKOFF_SECONDS = 30.0
_URL = re.compile(r"https?://\S+")


@dataclasses.dataclass
class AgentSettings:
    """Settings of one agent process."""

    name: str
    namespace: str
    labels: dict[str, str]
    workdir: Path
    concurrency: int = 1
    lease_seconds: int = 30
    drain_seconds: float = 60.0
    watch_seconds: int = 60
    max_watch_failures: int = 10


@dataclasses.dataclass
class AgentStats:
    """Counters for the shutdown summary and the benchmark."""

    claimed: int = 0
    conflicts: int = 0
    finished: int = 0
    lost: int = 0
    released: int = 0
    busy_seconds: float = 0.0

    def add(self, field: str, amount: float = 1) -> None:
        with _STATS_LOCK:
            setattr(self, field, getattr(self, field) + amount)


_STATS_LOCK = threading.Lock()


@dataclasses.dataclass
class ActiveCheck:
    """A check this agent holds, and the signals between its threads."""

    claim: Claim
    started: float = dataclasses.field(default_factory=time.monotonic)
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    finishing: threading.Event = dataclasses.field(default_factory=threading.Event)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


def redact(text: str) -> str:
    """Return `text` with credentials removed from every URL in it."""
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


class Agent:
    """One runner: its Lease, its watch, its claims and its workers."""

    def __init__(self, settings: AgentSettings, client, backend: Backend, session=None):
        self.settings = settings
        self.backend = backend
        self.labels = {**settings.labels, BACKEND_LABEL: backend.name}
        self.checks = CheckApi(client, settings.namespace)
        self.lease = RunnerLease(
            LeaseApi(client, settings.namespace), settings.name,
            lease_labels(settings.labels, backend.name), settings.lease_seconds,
            settings.concurrency,
        )
        self.session = session or http_session()
        self.stats = AgentStats()
        self._condition = threading.Condition()
        self._candidates: dict[str, dict] = {}
        self._active: dict[str, ActiveCheck] = {}
        self._stopping = threading.Event()
        self._drain_deadline: Optional[float] = None
        self._failure: Optional[str] = None
        # Checks whose spec this agent cannot read, warned about once each.
        self._unreadable: set[str] = set()

    # --- lifecycle ----------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; return 0 after a clean drain, 1 after a fatal fault."""
        self.backend.prepare()
        self.lease.acquire()
        log.info("runner %s serving namespace %s with backend %s, labels %s, concurrency %d",
                 self.settings.name, self.settings.namespace, self.backend.name,
                 self.labels, self.settings.concurrency)
        for target, name in ((self._lease_loop, "lease"), (self._watch_loop, "watch")):
            threading.Thread(target=target, name=name, daemon=True).start()
        try:
            self._dispatch()
        finally:
            self._drain()
            self.lease.release()
            log.info("runner %s stopped: %s", self.settings.name, dataclasses.asdict(self.stats))
        if self._failure:
            log.error("runner %s exited after a fault: %s", self.settings.name, self._failure)
            return 1
        return 0

    def stop(self, immediately: bool = False) -> None:
        """Stop claiming; running checks get `drain_seconds` unless `immediately`."""
        if immediately:
            self._drain_deadline = time.monotonic()
        elif self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + self.settings.drain_seconds
        self._stopping.set()
        with self._condition:
            self._condition.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _fail(self, reason: str) -> None:
        self._failure = reason
        self.stop()

    def in_flight(self) -> int:
        with self._condition:
            return len(self._active)

    # --- lease --------------------------------------------------------------------------

    def _lease_loop(self) -> None:
        interval = self.settings.lease_seconds / 3.0
        while not self._stopping.wait(interval):
            try:
                self.lease.renew()
            except RunnerNameTaken as error:
                self._fail(str(error))
                return
            # The API may be briefly unreachable; the next renewal retries, and the Lease
            # survives missed renewals for two more intervals.
            except Exception as error:
                log.warning("renewing the Lease of runner %s failed: %s",
                            self.settings.name, redact(str(error)))

    # --- watch --------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        from kubernetes.client.exceptions import ApiException

        failures = 0
        while not self._stopping.is_set():
            try:
                items, version = self.checks.list()
                self._replace_candidates(items)
                while not self._stopping.is_set():
                    watch = self.checks.watch(version, self.settings.watch_seconds)
                    for kind, obj in watch:
                        self._observe(kind, obj)
                        if self._stopping.is_set():
                            watch.stop()
                    version = watch.resource_version
                    failures = 0
            except ApiException as error:
                if error.status == 410:
                    log.debug("watch of checks expired; listing again")
                    continue
                failures = self._watch_failed(failures, describe_api_error(error))
            # Connection resets, timeouts and DNS failures surface as several exception types
            # of urllib3 and the socket layer; all of them mean: reconnect after a pause.
            except Exception as error:
                failures = self._watch_failed(failures, redact(f"{type(error).__name__}: {error}"))

    def _watch_failed(self, failures: int, detail: str) -> int:
        failures += 1
        if failures >= self.settings.max_watch_failures:
            self._fail(f"watching checks failed {failures} times in a row; last: {detail}")
            return failures
        delay = min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** failures) * random.uniform(0.8, 1.2)
        log.warning("watching checks failed (%d in a row, retrying in %.1f s): %s",
                    failures, delay, detail)
        self._stopping.wait(delay)
        return failures

    def _replace_candidates(self, items: list[dict]) -> None:
        with self._condition:
            self._candidates = {
                item["metadata"]["name"]: item for item in items if self._servable(item)
            }
            self._condition.notify_all()

    def _observe(self, kind: str, obj: dict) -> None:
        name = obj["metadata"]["name"]
        with self._condition:
            if kind != "DELETED" and self._servable(obj):
                self._candidates[name] = obj
                self._condition.notify_all()
            else:
                self._candidates.pop(name, None)

    def _servable(self, obj: dict) -> bool:
        """Return True for a Pending check whose requirements this runner meets."""
        name = obj.get("metadata", {}).get("name", "?")
        try:
            if status_of(obj).state != PENDING:
                return False
            spec = CheckSpec.model_validate(obj.get("spec") or {})
        except ValidationError as error:
            if name not in self._unreadable:
                self._unreadable.add(name)
                log.warning("ignoring check %s: its spec is invalid for this agent's version "
                            "of CoreMLCheck (%d errors); upgrade the agent", name,
                            error.error_count())
            return False
        if name in self._active or spec.deadline <= utc_now():
            return False
        return not unmet_requirements(spec.requirements, self.labels)

    # --- claims -------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            with self._condition:
                candidate = self._next_candidate()
                if candidate is None:
                    self._condition.wait(1.0)
                    continue
            claim = claim_check(self.checks, candidate, self.settings.name, self.labels)
            if claim is None:
                self.stats.add("conflicts")
                log.debug("check %s was claimed or changed by someone else first",
                          candidate["metadata"]["name"])
                continue
            self._start(claim)

    def _next_candidate(self) -> Optional[dict]:
        if len(self._active) >= self.settings.concurrency or not self._candidates:
            return None
        oldest = sorted(
            self._candidates,
            key=lambda name: (self._candidates[name]["metadata"].get("creationTimestamp", ""),
                              name),
        )[:CLAIM_WINDOW]
        chosen = min(oldest, key=self._rendezvous_rank)
        return self._candidates.pop(chosen)

    def _rendezvous_rank(self, check: str) -> bytes:
        return hashlib.blake2b(f"{self.settings.name}/{check}".encode(), digest_size=8).digest()

    def _start(self, claim: Claim) -> None:
        active = ActiveCheck(claim)
        with self._condition:
            self._active[claim.name] = active
        self.stats.add("claimed")
        log.info("claimed check %s (attempt %d)", claim.name, claim.attempt)
        threading.Thread(target=self._work, args=(active,), name=f"check-{claim.name}",
                         daemon=True).start()
        threading.Thread(target=self._heartbeat_loop, args=(active,),
                         name=f"heartbeat-{claim.name}", daemon=True).start()

    # --- work ---------------------------------------------------------------------------

    def _work(self, active: ActiveCheck) -> None:
        claim = active.claim
        workdir = self.settings.workdir / claim.name
        try:
            outcome = self._execute(active, workdir)
            if outcome is not None:
                active.finishing.set()
                claim.finish(outcome)
                self.stats.add("finished")
                log.info("finished check %s: %s (%s)", claim.name,
                         "succeeded" if outcome.succeeded else "failed", outcome.reason)
        except ClaimLost as error:
            self.stats.add("lost")
            log.warning("result of check %s rejected: %s", claim.name, error)
        # A failed status write must not kill the agent; the controller requeues the check
        # once its heartbeat goes stale.
        except Exception as error:
            log.error("writing the result of check %s failed: %s", claim.name, redact(str(error)))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
            self.stats.add("busy_seconds", time.monotonic() - active.started)
            active.done.set()
            with self._condition:
                self._active.pop(claim.name, None)
                self._condition.notify_all()

    def _execute(self, active: ActiveCheck, workdir: Path) -> Optional[CheckOutcome]:
        claim = active.claim
        context = CheckContext(claim.name, self.settings.namespace, self.settings.name,
                               dict(self.labels), claim.attempt)
        try:
            return execute_check(claim.spec, self.backend, context, workdir, self.session,
                                 active.cancelled)
        except CheckCancelled:
            log.info("stopped work on check %s: its claim was lost or released", claim.name)
            return None
        # A bug or host fault while running one check fails that check, not the agent.
        except Exception as error:
            log.exception("check %s failed inside the runner", claim.name)
            return CheckOutcome(False, RUNNER_ERROR, redact(f"{type(error).__name__}: {error}"))

    def _heartbeat_loop(self, active: ActiveCheck) -> None:
        claim = active.claim
        interval = claim.spec.heartbeat_seconds
        while not active.done.wait(interval):
            if active.finishing.is_set():
                return
            try:
                claim.heartbeat()
            except ClaimLost as error:
                if not active.finishing.is_set():
                    log.warning("check %s: %s; abandoning it", claim.name, error)
                    active.cancelled.set()
                return
            # Missed beats are tolerated until the controller's staleness limit.
            except Exception as error:
                log.warning("heartbeat of check %s failed: %s", claim.name, redact(str(error)))

    # --- shutdown -----------------------------------------------------------------------

    def _drain(self) -> None:
        with self._condition:
            if self._active:
                log.info("draining: waiting up to %.0f s for %d running checks",
                         max(0.0, self._remaining_drain()), len(self._active))
            # Re-read the deadline on every wake-up: a second signal moves it to now.
            while self._active and self._remaining_drain() > 0:
                self._condition.wait(min(1.0, max(0.01, self._remaining_drain())))
            remaining = list(self._active.values())
        for active in remaining:
            self._release(active)
        # A released check's worker stops at its next cancellation point. Waiting for it
        # keeps the process from exiting while the worker is inside torch.
        deadline = time.monotonic() + WORKER_STOP_SECONDS
        for active in remaining:
            if not active.done.wait(max(0.0, deadline - time.monotonic())):
                log.warning("the worker of check %s did not stop within %.0f s",
                            active.claim.name, WORKER_STOP_SECONDS)

    def workers_running(self) -> bool:
        """Return whether a check's worker thread is still running (after `run` returned)."""
        with self._condition:
            return bool(self._active)

    def _remaining_drain(self) -> float:
        deadline = self._drain_deadline if self._drain_deadline is not None else time.monotonic()
        return deadline - time.monotonic()

    def _release(self, active: ActiveCheck) -> None:
        active.cancelled.set()
        try:
            active.claim.release(f"runner {self.settings.name} stopped before finishing it")
            self.stats.add("released")
            log.info("released check %s back to the pool", active.claim.name)
        except ClaimLost:
            pass  # it finished, or the controller requeued it, in the meantime
        # The agent is exiting; an unreleased claim is requeued when its heartbeat goes stale.
        except Exception as error:
            log.warning("releasing check %s failed: %s", active.claim.name, redact(str(error)))
