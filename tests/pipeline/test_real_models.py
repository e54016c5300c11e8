"""The example ModelConversion files, with real models from PyPI packages, through the stages.

Slow: each converts a real model (deselect with `-m "not slow"`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PipelineRun

from modelconv.spec import load_conversion

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("example", ["minilm.yaml", "silero-vad.yaml", "silero-vad-onnx.yaml"])
def test_example_converts_and_validates(example, tmp_path, executor_available):
    path = EXAMPLES / example
    if not path.is_file():
        pytest.fail(f"{path} is missing: the examples folder ships with the repository")
    run = PipelineRun(load_conversion(str(path)).spec, tmp_path)
    assert run.error is None, run.describe()
    assert run.convert.artifacts["mlpackage"].is_dir()
    if executor_available:
        assert run.validate.metrics["coreml_source"].startswith("Core ML program executed")
        assert run.validate.metrics["min_cosine"] >= run.spec.validation.min_cosine


@pytest.mark.slow
def test_minilm_needs_the_decomposition_rung(tmp_path):
    run = PipelineRun(load_conversion(str(EXAMPLES / "minilm.yaml")).spec, tmp_path)
    assert run.error is None, run.describe()
    attempts = run.convert.metrics["attempts"]
    assert run.convert.metrics["path"] == "torch.export+decompositions"
    assert "new_ones" in attempts[0]["error"]
