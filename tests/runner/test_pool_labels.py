"""Runner labels, requirement matching and Lease liveness, without a cluster."""

from __future__ import annotations

import datetime

import pytest

from modelconv.runner.pool import (
    lease_labels,
    parse_labels,
    runner_from_lease,
    unmet_requirements,
)
from modelconv.runner.resource import Requirements

NOW = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=datetime.timezone.utc)


def test_labels_parse_into_pairs():
    assert parse_labels("chip=m2, macos=15.1,rack=b") == {"chip": "m2", "macos": "15.1", "rack": "b"}
    assert parse_labels("") == {}


@pytest.mark.parametrize("text, fragment", [
    ("chip", "has no '='"),
    ("Chip=m2", "key 'Chip' is invalid"),
    ("chip=", "invalid value"),
    ("chip=m2,chip=m3", "given twice"),
    ("macos=fifteen", "must be a version"),
])
def test_bad_labels_are_rejected_with_the_fix(text, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_labels(text)


@pytest.mark.parametrize("requirements, labels, unmet", [
    ({}, {}, []),
    ({"chip": "m2"}, {"chip": "m2"}, []),
    ({"chip": "m2"}, {"chip": "m1"}, ["chip m2"]),
    ({"minimumMacos": "14"}, {"macos": "15"}, []),
    ({"minimumMacos": "14.2"}, {"macos": "14.10"}, []),
    ({"minimumMacos": "15"}, {"macos": "15.0"}, []),
    ({"minimumMacos": "15.1"}, {"macos": "15"}, ["macOS >= 15.1"]),
    ({"minimumMacos": "14"}, {}, ["macOS >= 14"]),
    ({"backend": "coreml"}, {"backend": "mil-reference"}, ["backend coreml"]),
    ({"backend": "coreml", "chip": "m3"}, {"backend": "coreml", "chip": "m3", "macos": "15"}, []),
])
def test_requirements_match_runner_labels(requirements, labels, unmet):
    assert unmet_requirements(Requirements.model_validate(requirements), labels) == unmet


def _lease(renewed: datetime.datetime | None, holder: str | None = "mac-1/42/ab") -> dict:
    spec = {"holderIdentity": holder, "leaseDurationSeconds": 30}
    if renewed:
        spec["renewTime"] = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"metadata": {"name": "mac-1", "labels": lease_labels({"chip": "m2"}, "coreml"),
                         "annotations": {"runner.modelconv.io/concurrency": "2"}},
            "spec": spec}


def test_lease_is_live_within_its_duration():
    record = runner_from_lease(_lease(NOW - datetime.timedelta(seconds=29)))
    assert record.is_live(NOW)
    assert record.labels == {"chip": "m2", "backend": "coreml"}
    assert record.concurrency == 2


def test_lease_expires_after_its_duration():
    record = runner_from_lease(_lease(NOW - datetime.timedelta(seconds=31)))
    assert not record.is_live(NOW)


def test_released_lease_is_not_live():
    record = runner_from_lease(_lease(NOW, holder=None))
    assert not record.is_live(NOW)


def test_never_renewed_lease_is_not_live():
    assert not runner_from_lease(_lease(None)).is_live(NOW)
