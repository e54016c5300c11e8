"""The hints of export, convert and validate failures suggest only settings a run did not try."""

from __future__ import annotations

import pytest
from conftest import make_spec

from modelconv.pipeline.attempts import Attempt
from modelconv.pipeline.comparison import OutputComparison
from modelconv.pipeline.convert import WrongProgram, _classify_ladder_failure
from modelconv.pipeline.export import untried_exporter
from modelconv.pipeline.ladder import LADDERS
from modelconv.pipeline.validate import _describe_divergence


def wrong_ladder(path: str) -> tuple[list[Attempt], list]:
    """Return the attempts of a ladder whose every rung converted a program that is wrong."""
    comparison = OutputComparison("y", violations=["sample 0: cosine 0.000000 < minCosine 0.999"])
    wrong = [(rung, WrongProgram([comparison], "fp16")) for rung in LADDERS[path]]
    attempts = [Attempt(rung, False, "converted program is wrong") for rung in LADDERS[path]]
    return attempts, wrong


@pytest.mark.parametrize(
    ("precision", "path", "suggested", "not_suggested"),
    [
        ("float16", "auto", ["coreml.precision: auto or float32"], ["coreml.path"]),
        ("float32", "auto", [], ["coreml.precision", "coreml.path"]),
        ("auto", "auto", [], ["coreml.precision", "coreml.path"]),
        ("auto", "export", ["coreml.path: trace"], ["coreml.precision"]),
        ("float32", "trace", ["coreml.path: export"], ["coreml.precision"]),
    ],
)
def test_tolerance_hint_skips_tried_settings(precision, path, suggested, not_suggested):
    spec = make_spec("linear", coreml={"precision": precision, "path": path})
    attempts, wrong = wrong_ladder(path)
    error = _classify_ladder_failure(spec, attempts, wrong)
    assert error.reason == "ToleranceExceeded"
    assert "loosen validation.atol/rtol" in error.message
    for setting in suggested:
        assert setting in error.message
    for setting in not_suggested:
        assert setting not in error.message


@pytest.mark.parametrize(
    ("path", "suggested"), [("auto", None), ("export", "trace"), ("trace", "export")]
)
def test_unsupported_operator_hint_names_untried_path(path, suggested):
    spec = make_spec("linear", coreml={"path": path})
    attempts = [
        Attempt(rung, False, "NotImplementedError", "aten::bucketize") for rung in LADDERS[path]
    ]
    error = _classify_ladder_failure(spec, attempts, [])
    assert error.reason == "UnsupportedOperator"
    if suggested is None:
        assert "coreml.path" not in error.message
    else:
        assert error.message.endswith(f"or try coreml.path: {suggested}")


def test_conversion_failed_hint_names_untried_path():
    spec = make_spec("linear", coreml={"path": "export"})
    attempts = [Attempt(rung, False, "RuntimeError: boom") for rung in LADDERS["export"]]
    error = _classify_ladder_failure(spec, attempts, [])
    assert error.reason == "ConversionFailed"
    assert error.message.endswith("or try coreml.path: trace")


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        ([Attempt("dynamo", True)], "torchscript"),
        ([Attempt("torchscript", True)], "dynamo"),
        ([Attempt("dynamo", False, "TorchExportError"), Attempt("torchscript", True)], None),
        ([Attempt("dynamo", False, "x"), Attempt("torchscript", False, "y")], None),
        ([Attempt("passthrough", True)], None),
    ],
)
def test_untried_exporter(attempts, expected):
    assert untried_exporter(attempts) == expected


def test_divergence_hint_for_float16_suggests_auto():
    diagnosis = {"first_divergent_ops": []}
    assert _describe_divergence(diagnosis, "float16").endswith("coreml.precision: auto or float32")


def test_divergence_hint_for_auto_suggests_only_float32():
    op = {"op_type": "sub", "name": "sub_cast_fp16", "max_rel_error": 0.5}
    accumulated = _describe_divergence({"first_divergent_ops": []}, "auto")
    single = _describe_divergence({"first_divergent_ops": [op]}, "auto")
    assert accumulated.endswith("try coreml.precision: float32")
    assert single.endswith("try coreml.precision: float32")
    assert "auto" not in single
