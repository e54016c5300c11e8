"""The runner pool as the API shows it: runner Leases, their labels, liveness and matching.

Each agent keeps one `coordination.k8s.io/v1` Lease in the pool namespace. The Lease is its
registration: `metadata.labels` carry the runner's labels under the `runner.modelconv.io/`
prefix (`chip`, `macos`, `backend` and any others given with `--labels`), and `renewTime`
plus `leaseDurationSeconds` tell whether it is alive. An agent that stops cleanly clears
`holderIdentity`, so its Lease stays as a record but no longer counts as live.

Liveness compares the Lease's `renewTime`, written with the agent's clock, against the
reader's clock, so the pool assumes clocks synchronized (NTP) to well within a lease
duration, as Kubernetes leader election does.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Mapping, Optional

from .resource import Requirements

LABEL_PREFIX = "runner.modelconv.io/"
COMPONENT_LABELS = {"app.kubernetes.io/name": "modelconv", "app.kubernetes.io/component": "runner"}
RUNNER_SELECTOR = "app.kubernetes.io/component=runner,app.kubernetes.io/name=modelconv"
CONCURRENCY_ANNOTATION = LABEL_PREFIX + "concurrency"
BACKEND_LABEL = "backend"
CHIP_LABEL = "chip"
MACOS_LABEL = "macos"

_LABEL_KEY = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def parse_labels(text: str) -> dict[str, str]:
    """Parse `chip=m2,macos=15` into a dict; raise ValueError naming the bad pair."""
    labels: dict[str, str] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        key, separator, value = pair.partition("=")
        if not separator:
            raise ValueError(f"label {pair!r} has no '=': write key=value, e.g. chip=m2")
        key, value = key.strip(), value.strip()
        if not _LABEL_KEY.match(key):
            raise ValueError(
                f"label key {key!r} is invalid: use lowercase letters, digits, '-', '_', '.'"
            )
        if not _LABEL_VALUE.match(value) or not value:
            raise ValueError(
                f"label {key}={value!r} has an invalid value: use 1-63 letters, digits, '-', "
                "'_' or '.', starting and ending with a letter or digit"
            )
        if key in labels:
            raise ValueError(f"label {key!r} is given twice")
        labels[key] = value
    if MACOS_LABEL in labels and not _VERSION.match(labels[MACOS_LABEL]):
        raise ValueError(f"label macos={labels[MACOS_LABEL]!r} must be a version, e.g. 15 or 14.6")
    return labels


def lease_labels(labels: Mapping[str, str], backend: str) -> dict[str, str]:
    """Return the Lease's metadata labels for a runner with `labels` and `backend`."""
    prefixed = {LABEL_PREFIX + key: value for key, value in labels.items()}
    return {**COMPONENT_LABELS, **prefixed, LABEL_PREFIX + BACKEND_LABEL: backend}


def runner_labels(metadata_labels: Mapping[str, str]) -> dict[str, str]:
    """Return a Lease's runner labels without their prefix (backend included)."""
    return {
        key.removeprefix(LABEL_PREFIX): value
        for key, value in (metadata_labels or {}).items()
        if key.startswith(LABEL_PREFIX)
    }


def version_tuple(text: str) -> tuple[int, ...]:
    """Return `14.6` as (14, 6); raise ValueError for anything but dotted integers."""
    if not _VERSION.match(text):
        raise ValueError(f"{text!r} is not a version")
    return tuple(int(part) for part in text.split("."))


def unmet_requirements(requirements: Requirements, labels: Mapping[str, str]) -> list[str]:
    """Return the requirements a runner with `labels` does not meet, as short phrases."""
    unmet = []
    if requirements.backend and labels.get(BACKEND_LABEL) != requirements.backend:
        unmet.append(f"backend {requirements.backend}")
    if requirements.chip and labels.get(CHIP_LABEL) != requirements.chip:
        unmet.append(f"chip {requirements.chip}")
    if requirements.minimum_macos:
        macos = labels.get(MACOS_LABEL)
        if not macos or not _VERSION.match(macos):
            unmet.append(f"macOS >= {requirements.minimum_macos}")
        elif _padded(version_tuple(macos)) < _padded(version_tuple(requirements.minimum_macos)):
            unmet.append(f"macOS >= {requirements.minimum_macos}")
    return unmet


def _padded(version: tuple[int, ...]) -> tuple[int, ...]:
    # 15 and 15.0 are the same release.
    return version + (0,) * (3 - len(version))


def describe_requirements(requirements: Requirements) -> str:
    """Return the requirements as a phrase for messages, e.g. `chip m2, macOS >= 14`."""
    phrases = unmet_requirements(requirements, {})
    return ", ".join(phrases) if phrases else "any runner"


@dataclasses.dataclass(frozen=True)
class RunnerRecord:
    """One runner as its Lease describes it."""

    name: str
    holder: Optional[str]
    labels: dict[str, str]
    renew_time: Optional[datetime.datetime]
    duration_seconds: int
    concurrency: Optional[int]

    def age_seconds(self, now: datetime.datetime) -> Optional[float]:
        """Return seconds since the last renewal, or None when it never renewed."""
        if self.renew_time is None:
            return None
        return (now - self.renew_time).total_seconds()

    def is_live(self, now: datetime.datetime) -> bool:
        """Return True while the holder is set and the last renewal is within the duration."""
        age = self.age_seconds(now)
        return bool(self.holder) and age is not None and age <= self.duration_seconds

    @property
    def backend(self) -> Optional[str]:
        return self.labels.get(BACKEND_LABEL)


def runner_from_lease(lease: Mapping) -> RunnerRecord:
    """Build a RunnerRecord from a Lease as a plain dict (API JSON form)."""
    metadata = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    concurrency = (metadata.get("annotations") or {}).get(CONCURRENCY_ANNOTATION)
    return RunnerRecord(
        name=metadata.get("name", ""),
        holder=spec.get("holderIdentity"),
        labels=runner_labels(metadata.get("labels") or {}),
        renew_time=_parse_time(spec.get("renewTime")),
        duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
        concurrency=int(concurrency) if concurrency and concurrency.isdigit() else None,
    )


def _parse_time(value: object) -> Optional[datetime.datetime]:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        moment = value
    else:
        moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment
