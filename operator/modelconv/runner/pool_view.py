"""The pool as `modelconv runners` shows it: one row per runner Lease.

Needs list access to Leases and CoreMLChecks in the pool namespace, which the operator and
cluster admins have and runners do not.
"""

from __future__ import annotations

import datetime
from typing import Optional

from .kube import CheckApi, LeaseApi
from .pool import RUNNER_SELECTOR, RunnerRecord, runner_from_lease
from .resource import CLAIMED, status_of, utc_now

COLUMNS = ("NAME", "BACKEND", "LABELS", "LIVE", "LAST RENEWAL", "IN FLIGHT")


def pool_rows(client, namespace: str, now: Optional[datetime.datetime] = None) -> list[dict]:
    """Return one dict per runner: name, backend, labels, liveness and checks in flight."""
    now = now or utc_now()
    records = [runner_from_lease(lease) for lease in LeaseApi(client, namespace).list(RUNNER_SELECTOR)]
    checks, _ = CheckApi(client, namespace).list()
    in_flight: dict[str, list[str]] = {}
    for check in checks:
        status = status_of(check)
        if status.state == CLAIMED and status.runner:
            in_flight.setdefault(status.runner, []).append(check["metadata"]["name"])
    return [_row(record, in_flight.get(record.name, []), now)
            for record in sorted(records, key=lambda item: item.name)]


def _row(record: RunnerRecord, checks: list[str], now: datetime.datetime) -> dict:
    age = record.age_seconds(now)
    return {
        "name": record.name,
        "backend": record.backend,
        "labels": {key: value for key, value in record.labels.items() if key != "backend"},
        "live": record.is_live(now),
        "stopped": not record.holder,
        "secondsSinceRenewal": round(age, 1) if age is not None else None,
        "leaseDurationSeconds": record.duration_seconds,
        "concurrency": record.concurrency,
        "checksInFlight": sorted(checks),
    }


def render_table(rows: list[dict]) -> str:
    """Return the rows as an aligned text table, kubectl style."""
    lines = [COLUMNS]
    for row in rows:
        labels = ",".join(f"{key}={value}" for key, value in sorted(row["labels"].items()))
        if row["stopped"]:
            live = "stopped"
        elif row["live"]:
            live = "yes"
        else:
            live = "expired"
        age = row["secondsSinceRenewal"]
        renewal = f"{age:.0f}s ago / {row['leaseDurationSeconds']}s" if age is not None else "never"
        slots = f"{len(row['checksInFlight'])}/{row['concurrency'] or '?'}"
        lines.append((row["name"], row["backend"] or "?", labels or "-", live, renewal, slots))
    widths = [max(len(line[index]) for line in lines) for index in range(len(COLUMNS))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip()
        for line in lines
    )
