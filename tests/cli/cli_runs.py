"""ModelConversion files for tiny real models, and the installed `modelconv` command."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

# The console script installed next to this interpreter (the project is installed editable).
MODELCONV = str(Path(sys.executable).parent / "modelconv")

# A 8-in, 4-out linear layer with seeded random weights: converts in seconds on every path.
TINY_CONVERSION = {
    "apiVersion": "modelconv.io/v1alpha1",
    "kind": "ModelConversion",
    "metadata": {"name": "tiny-linear"},
    "spec": {
        "source": {
            "factory": {
                "entrypoint": "torch.nn:Linear",
                "kwargs": {"in_features": 8, "out_features": 4},
                "seed": 1,
            }
        },
        "inputs": [{"name": "x", "shape": [2, 8]}],
        "outputs": [{"name": "y"}],
        "validation": {"samples": {"count": 2}},
        "publish": {"model": "tiny-linear", "version": "1.0.0"},
    },
}


def tiny_document(**spec_changes) -> dict:
    """Return the tiny conversion with top-level spec fields replaced."""
    document = copy.deepcopy(TINY_CONVERSION)
    document["spec"].update(copy.deepcopy(spec_changes))
    return document


def write_document(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    """Run the installed `modelconv` command; return the CompletedProcess (text output)."""
    environment = dict(os.environ)
    environment.update(env or {})
    return subprocess.run(
        [MODELCONV, *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=900,
    )
