"""Run the installed `modelconv` command as a new user does, on files written for one test."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

# The console script installed next to this interpreter (the project is installed editable).
MODELCONV = str(Path(sys.executable).parent / "modelconv")

# A 4-in, 2-out linear layer: the smallest real model that converts on every path.
LINEAR_CONVERSION = {
    "apiVersion": "modelconv.io/v1alpha1",
    "kind": "ModelConversion",
    "metadata": {"name": "linear"},
    "spec": {
        "source": {
            "factory": {
                "entrypoint": "torch.nn:Linear",
                "kwargs": {"in_features": 4, "out_features": 2},
            }
        },
        "inputs": [{"name": "x", "shape": [1, 4]}],
        "outputs": [{"name": "y"}],
        "coreml": {"precision": "float32"},
        "publish": {"model": "linear", "version": "1.0.0"},
    },
}


def linear_document(**spec_changes) -> dict:
    """Return the linear conversion with top-level spec fields replaced."""
    document = copy.deepcopy(LINEAR_CONVERSION)
    document["spec"].update(copy.deepcopy(spec_changes))
    return document


def write_document(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def run_modelconv(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `modelconv ARGS...` with AWS_EC2_METADATA_DISABLED, so no AWS client probes metadata."""
    environment = dict(os.environ, AWS_EC2_METADATA_DISABLED="true")
    return subprocess.run(
        [MODELCONV, *map(str, args)], capture_output=True, text=True, env=environment, cwd=cwd
    )
