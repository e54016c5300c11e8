"""The generated CoreMLCheck CRD and the resource models behind it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from modelconv.runner.crd import render_crd
from modelconv.runner.resource import CheckSpec, CheckStatus

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "coremlcheck.yaml"


def test_checked_in_crd_matches_the_models():
    assert CRD_FILE.read_text() == render_crd(), (
        "crds/coremlcheck.yaml is stale: run "
        "modelconv crd --kind coremlcheck > crds/coremlcheck.yaml"
    )


def test_crd_command_prints_either_crd_or_both():
    modelconv = [sys.executable, "-c", "import sys, modelconv.cli; sys.exit(modelconv.cli.main())",
                 "crd", "--kind"]
    printed = subprocess.run([*modelconv, "coremlcheck"], capture_output=True, text=True,
                             check=True).stdout
    assert printed == CRD_FILE.read_text()
    both = subprocess.run([*modelconv, "all"], capture_output=True, text=True, check=True).stdout
    names = [document["metadata"]["name"] for document in yaml.safe_load_all(both) if document]
    assert names == ["modelconversions.modelconv.io", "coremlchecks.modelconv.io"]


def test_crd_has_status_subresource_and_printer_columns():
    crd = yaml.safe_load(CRD_FILE.read_text())
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["scope"] == "Namespaced"
    assert version["subresources"] == {"status": {}}
    columns = [column["name"] for column in version["additionalPrinterColumns"]]
    assert columns == ["State", "Runner", "Attempts", "Reason", "Age"]


def test_status_schema_keeps_no_defaults():
    crd = yaml.safe_load(CRD_FILE.read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert "default" not in yaml.safe_dump(status)


def _spec(**changes) -> dict:
    item = {"url": "http://127.0.0.1:1/b/k", "key": "k", "expiresAt": "2030-01-01T00:00:00Z"}
    spec = {"package": item, "inputs": item, "expectedOutputs": item, "reportUpload": item,
            "deadline": "2030-01-01T00:00:00Z"}
    spec.update(changes)
    return spec


def test_spec_rejects_repeated_compute_units():
    with pytest.raises(ValidationError, match="compute units must be unique"):
        CheckSpec.model_validate(_spec(computeUnits=["all", "all"]))


def test_spec_rejects_unknown_compute_unit():
    with pytest.raises(ValidationError):
        CheckSpec.model_validate(_spec(computeUnits=["gpuOnly"]))


def test_status_times_are_written_in_one_rfc3339_form():
    status = CheckStatus.model_validate({"state": "Claimed", "claimTime": "2026-12-04T10:00:00+00:00"})
    assert status.document()["claimTime"] == "2026-12-04T10:00:00.000000Z"
