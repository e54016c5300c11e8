"""Features that coremltools renames: the pipeline feeds and reports them by their Core ML names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelconv.errors import CONVERSION_FAILED, ConversionError
from modelconv.pipeline.feature_names import match_feature_names, sanitized_name
from modelconv.pipeline.run import run_pipeline
from modelconv.spec import parse_conversion


def test_reserved_and_invalid_names_follow_coremltools() -> None:
    assert sanitized_name("state") == "state_workaround"
    assert sanitized_name("fp16") == "fp16_workaround"
    assert sanitized_name("input.1") == "input_1"
    assert sanitized_name("audio") == "audio"


def test_renamed_input_is_matched_by_rule() -> None:
    names = match_feature_names(
        ["input", "state", "sr"], ["input", "state_workaround", "sr"], ["y"], ["y"]
    )

    assert names.inputs == {"input": "input", "state": "state_workaround", "sr": "sr"}
    assert names.renamed() == {"inputs": {"state": "state_workaround"}}
    assert names.feed({"state": 1, "sr": 2}) == {"state_workaround": 1, "sr": 2}


def test_renamed_output_is_read_back_by_spec_name() -> None:
    names = match_feature_names(["x"], ["x"], ["state", "y"], ["state_workaround", "y"])

    assert names.by_spec_name({"state_workaround": 1, "y": 2}) == {"state": 1, "y": 2}


def test_unmatched_names_fail_with_both_lists() -> None:
    with pytest.raises(ConversionError) as failure:
        match_feature_names(["a", "b"], ["c"])

    assert failure.value.reason == CONVERSION_FAILED
    assert "['c']" in failure.value.message
    assert "['a', 'b']" in failure.value.message


def write_onnx_with_state_input(path: Path) -> Path:
    """Write y = state @ W + b, an ONNX graph whose input is called `state`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    generator = np.random.default_rng(3)
    weight = numpy_helper.from_array(generator.standard_normal((4, 2)).astype(np.float32), "W")
    bias = numpy_helper.from_array(generator.standard_normal(2).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["state", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["y"]),
        ],
        "state_model",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_onnx_input_named_state_validates_and_is_reported(tmp_path: Path) -> None:
    source = write_onnx_with_state_input(tmp_path / "state.onnx")
    conversion = parse_conversion({
        "apiVersion": "modelconv.io/v1alpha1",
        "kind": "ModelConversion",
        "metadata": {"name": "state-input"},
        "spec": {
            "source": {"onnx": {"uri": str(source)}},
            "inputs": [{"name": "state", "shape": [1, 4]}],
            "outputs": [{"name": "y"}],
            "coreml": {"precision": "float32"},
            "validation": {"samples": {"count": 2}},
            "publish": {"model": "state-input", "version": "1.0.0"},
        },
    })

    outcome = run_pipeline(conversion, store=str(tmp_path / "releases"))

    assert outcome.succeeded, f"{outcome.reason}: {outcome.message}"
    validate = outcome.result("validate")
    assert validate.metrics["coreml_renamed"] == {"inputs": {"state": "state_workaround"}}
    assert validate.metrics["coreml"] is not None
    release = tmp_path / "releases" / "state-input" / "1.0.0"
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["inputs"][0]["name"] == "state_workaround"
    assert manifest["inputs"][0]["specName"] == "state"
    report = json.loads((release / "report.json").read_text())
    assert report["package_signature"]["inputs"][0]["specName"] == "state"
