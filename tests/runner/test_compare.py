"""Comparison of backend outputs with expected outputs, and latency percentiles."""

from __future__ import annotations

import numpy as np
import pytest

from modelconv.runner.compare import compare_output, compare_samples, percentile_ms, worst
from modelconv.runner.resource import Tolerances

TOLERANCES = Tolerances(atol=1e-3, rtol=1e-2, min_cosine=0.999)


def test_close_outputs_pass():
    expected = np.linspace(-1, 1, 50, dtype=np.float32)
    result = compare_output(0, "y", expected + 1e-4, expected, TOLERANCES)
    assert result.passed
    assert result.max_abs_error == pytest.approx(1e-4, rel=1e-2)
    assert result.cosine > 0.9999


def test_outputs_beyond_atol_fail_with_the_numbers():
    expected = np.zeros(10, dtype=np.float32)
    actual = expected.copy()
    actual[3] = 0.5
    result = compare_output(1, "y", actual, expected, TOLERANCES)
    assert not result.passed
    assert result.max_abs_error == 0.5
    assert "max abs error 0.5 exceeds atol 0.001" in result.problem


def test_low_cosine_fails_even_within_atol():
    expected = np.array([1e-4, 0.0], dtype=np.float32)
    actual = np.array([0.0, 1e-4], dtype=np.float32)
    result = compare_output(0, "y", actual, expected, TOLERANCES)
    assert not result.passed
    assert "cosine 0.000000 is below minCosine 0.999" in result.problem


def test_nan_output_fails_without_numbers():
    result = compare_output(0, "y", np.array([np.nan, 1.0]), np.array([0.0, 1.0]), TOLERANCES)
    assert not result.passed
    assert result.max_abs_error is None
    assert result.problem == "output holds NaN or infinity"


def test_shape_mismatch_fails_but_batch_of_one_is_the_same_tensor():
    expected = np.ones((1, 4), dtype=np.float32)
    assert compare_output(0, "y", np.ones(4), expected, TOLERANCES).passed
    mismatch = compare_output(0, "y", np.ones(5), expected, TOLERANCES)
    assert not mismatch.passed
    assert "shape [5] differs from the expected [1, 4]" in mismatch.problem


def test_missing_output_fails():
    comparisons = compare_samples([{"z": np.ones(2)}], [{"y": np.ones(2)}], TOLERANCES)
    assert len(comparisons) == 1
    assert not comparisons[0].passed
    assert "returned no output 'y'" in comparisons[0].problem


def test_worst_takes_largest_error_and_lowest_cosine():
    comparisons = compare_samples(
        [{"y": np.array([1.0, 2.0])}, {"y": np.array([1.0, 2.5])}],
        [{"y": np.array([1.0, 2.0])}, {"y": np.array([1.0, 2.0])}], TOLERANCES)
    error, cosine = worst(comparisons)
    assert error == 0.5
    assert cosine < 1.0


def test_latency_percentiles_interpolate():
    latencies = [float(value) for value in range(1, 101)]
    assert percentile_ms(latencies, 50) == 50.5
    assert percentile_ms(latencies, 90) == 90.1
    assert percentile_ms([], 50) is None
