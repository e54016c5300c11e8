"""The operator process must stay free of the ML stack (torch, onnx, coremltools)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY_MODULES = ("torch", "onnx", "onnxruntime", "onnxscript", "coremltools", "numpy",
                 "transformers")

# Everything `modelconv operator` loads before it talks to the cluster, plus parsing its
# command line through the real CLI entry point.
PROBE = """
import json, sys
import modelconv.cli
import modelconv.controller.runtime, modelconv.controller.handlers, modelconv.controller.rbac
parser = modelconv.cli.build_parser()
parser.parse_args(["operator", "--namespace", "a", "--store", "s3://bucket/x"])
# Reading a stage result goes through the stage runner's module and the store.
import asyncio, tempfile
from modelconv.controller.results import ResultReader
assert asyncio.run(ResultReader().result(tempfile.mkdtemp(), "export", "0" * 64)) is None
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in %r)))
""" % (HEAVY_MODULES,)


def test_operator_imports_no_ml_library():
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    loaded = json.loads(probe.stdout.strip().splitlines()[-1])
    assert loaded == []


def test_planning_imports_no_ml_library():
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, modelconv.plan, modelconv.crd; "
         f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY_MODULES!r}])"],
        capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"
