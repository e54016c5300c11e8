"""The example ModelConversion files, with real models from PyPI packages, through the stages.

Slow: each converts a real model (deselect with `-m "not slow"`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import PipelineRun

from modelconv import zoo
from modelconv.spec import load_conversion

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_spec(name: str):
    path = EXAMPLES / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the examples folder ships with the repository")
    return load_conversion(str(path)).spec


@pytest.mark.slow
@pytest.mark.parametrize("example", ["minilm.yaml", "silero-vad.yaml"])
def test_example_converts_and_validates(example, pipeline_runs, executor_available):
    run = pipeline_runs(example, example_spec(example))
    assert run.error is None, run.describe()
    assert run.convert.artifacts["mlpackage"].is_dir()
    if executor_available:
        assert run.validate.metrics["coreml_source"].startswith("Core ML program executed")
        assert run.validate.metrics["min_cosine"] >= run.spec.validation.min_cosine


@pytest.mark.slow
def test_minilm_needs_the_decomposition_rung(pipeline_runs):
    run = pipeline_runs("minilm.yaml", example_spec("minilm.yaml"))
    assert run.error is None, run.describe()
    attempts = run.convert.metrics["attempts"]
    assert run.convert.metrics["path"] == "torch.export+decompositions"
    assert "new_ones" in attempts[0]["error"]


@pytest.mark.slow
def test_silero_onnx_if_node_is_unsupported_operator(tmp_path, monkeypatch):
    # The example reads silero_vad.onnx from the working directory, as its comment says.
    shutil.copyfile(zoo.silero_vad_onnx_path("silero_vad.onnx"), tmp_path / "silero_vad.onnx")
    monkeypatch.chdir(tmp_path)
    run = PipelineRun(example_spec("silero-vad-onnx.yaml"), tmp_path / "run")
    assert run.failed_stage == "convert"
    assert run.error.reason == "UnsupportedOperator"
    assert "cannot convert the operator If (opset 16)" in run.error.message
