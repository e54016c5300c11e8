"""Tolerance semantics: element-wise atol/rtol, cosine, PSNR, non-finite values, shapes."""

from __future__ import annotations

import math

import numpy as np
from conftest import make_spec

from modelconv.pipeline.comparison import ERROR_BIN_EDGES, compare_outputs

SETTINGS = make_spec("linear", validation={"atol": 1e-3, "rtol": 1e-2, "minCosine": 0.99}).validation


def compare(actual, expected, settings=SETTINGS):
    actual = np.asarray(actual, dtype=np.float32)
    expected = np.asarray(expected, dtype=np.float32)
    return compare_outputs([{"y": actual}], [{"y": expected}], ["y"], settings)[0]


def test_errors_within_atol_plus_rtol_pass():
    expected = np.array([0.0, 1.0, -10.0])
    result = compare(expected + np.array([0.0009, 0.0109, -0.1009]), expected)
    assert result.passed, result.violations
    assert math.isclose(result.max_abs_error, 0.1009, rel_tol=1e-4)


def test_an_element_beyond_its_limit_fails_with_value_and_limit():
    result = compare([1.0, 2.0, 3.5], [1.0, 2.0, 3.0])
    assert not result.passed
    assert "1 of 3 elements" in result.violations[0]
    assert "|error| 0.5 > limit 0.031" in result.violations[0]


def test_relative_error_ignores_near_zero_references():
    result = compare([1e-4, 2.0], [0.0, 2.0])
    assert result.passed
    assert result.max_rel_error == 0.0


def test_low_cosine_fails_even_within_atol():
    settings = make_spec("linear", validation={"atol": 1.0, "minCosine": 0.999}).validation
    result = compare([0.1, -0.1], [-0.1, 0.1], settings)
    assert result.cosine < -0.99
    assert any("cosine" in violation and "minCosine 0.999" in violation for violation in result.violations)


def test_psnr_below_the_minimum_fails():
    settings = make_spec("linear", validation={"atol": 1.0, "minPsnr": 60}).validation
    result = compare([1.01, 0.0], [1.0, 0.0], settings)
    assert 40 < result.psnr_db < 45
    assert any("PSNR" in violation and "minPsnr 60" in violation for violation in result.violations)


def test_exact_outputs_have_no_psnr_figure():
    result = compare([1.0, 2.0], [1.0, 2.0])
    assert result.psnr_db is None
    assert math.isclose(result.cosine, 1.0)


def test_nan_always_fails():
    result = compare([1.0, math.nan], [1.0, 2.0])
    assert not result.passed
    assert "NaN in 1 of 2 elements" in result.violations[0]
    assert result.max_abs_error == math.inf


def test_infinity_matching_the_reference_passes():
    result = compare([0.0, -math.inf, 1.0], [0.0, -math.inf, 1.0])
    assert result.passed, result.violations
    assert result.max_abs_error == 0.0


def test_infinity_where_the_reference_is_finite_fails():
    result = compare([0.0, -math.inf], [0.0, -3.0])
    assert not result.passed
    assert "infinity in 1 elements" in result.violations[0]


def test_a_reference_with_nan_is_reported_as_such():
    result = compare([0.0, 1.0], [0.0, math.nan])
    assert "reference itself holds NaN" in result.violations[0]


def test_a_different_shape_names_both_shapes():
    result = compare(np.zeros((5, 5)), np.zeros(5))
    assert not result.passed
    assert "shape (5, 5) differs from the reference shape (5,)" in result.violations[0]


def test_histogram_counts_every_element_in_its_bin():
    result = compare([0.0, 0.5e-3, 0.05, 2.0], [0.0, 0.0, 0.0, 0.0], make_spec("linear", validation={"atol": 10}).validation)
    assert sum(result.histogram) == 4
    assert len(result.histogram) == len(ERROR_BIN_EDGES) - 1
    assert result.histogram[0] == 1  # exact
    assert result.histogram[ERROR_BIN_EDGES.index(1e-4)] == 1
    assert result.histogram[ERROR_BIN_EDGES.index(1e-2)] == 1
    assert result.histogram[-1] == 1


def test_figures_are_the_worst_over_samples():
    expected = [{"y": np.zeros(3, np.float32)}, {"y": np.zeros(3, np.float32)}]
    actual = [{"y": np.full(3, 1e-4, np.float32)}, {"y": np.full(3, 5e-4, np.float32)}]
    result = compare_outputs(actual, expected, ["y"], SETTINGS)[0]
    assert math.isclose(result.max_abs_error, 5e-4, rel_tol=1e-3)
    assert sum(result.histogram) == 6


def test_a_missing_output_fails():
    result = compare_outputs([{}], [{"y": np.zeros(1)}], ["y"], SETTINGS)[0]
    assert result.violations == ["sample 0: output missing"]
