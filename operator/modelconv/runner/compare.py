"""Comparison of a backend's outputs with the expected outputs, and latency percentiles.

An output passes when every element satisfies |actual - expected| <= atol + rtol * |expected|
(`numpy.allclose` semantics) and the cosine similarity of the flattened tensors is at least
`minCosine`. Non-finite values where the expected output is finite fail the output.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

from .resource import Tolerances


@dataclasses.dataclass(frozen=True)
class OutputComparison:
    """One output of one sample against its expected value."""

    sample: int
    output: str
    passed: bool
    max_abs_error: Optional[float]
    cosine: Optional[float]
    problem: str = ""

    def document(self) -> dict:
        return dataclasses.asdict(self)


def compare_output(sample: int, name: str, actual, expected, tolerances: Tolerances) -> OutputComparison:
    """Compare one output tensor with its expected value."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        # A single leading batch dimension of 1 is the same tensor in Core ML's view.
        if actual.size == expected.size and actual.squeeze().shape == expected.squeeze().shape:
            actual = actual.reshape(expected.shape)
        else:
            return OutputComparison(
                sample, name, False, None, None,
                f"shape {list(actual.shape)} differs from the expected {list(expected.shape)}",
            )
    if not np.isfinite(actual[np.isfinite(expected)]).all():
        return OutputComparison(sample, name, False, None, None, "output holds NaN or infinity")
    error = np.abs(actual - expected)
    max_abs_error = float(error.max()) if error.size else 0.0
    cosine = cosine_similarity(actual, expected)
    within = bool(np.allclose(actual, expected, atol=tolerances.atol, rtol=tolerances.rtol,
                              equal_nan=True))
    problems = []
    if not within:
        problems.append(
            f"max abs error {max_abs_error:.3g} exceeds atol {tolerances.atol:g} + "
            f"rtol {tolerances.rtol:g} * |expected|"
        )
    if cosine < tolerances.min_cosine:
        problems.append(f"cosine {cosine:.6f} is below minCosine {tolerances.min_cosine:g}")
    return OutputComparison(sample, name, not problems, _finite(max_abs_error), _finite(cosine),
                            "; ".join(problems))


def cosine_similarity(actual: np.ndarray, expected: np.ndarray) -> float:
    """Return the cosine of the flattened tensors; 1.0 when both are all zeros."""
    finite = np.isfinite(actual) & np.isfinite(expected)
    a = actual[finite].ravel()
    b = expected[finite].ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a, b) / norms)


def compare_samples(
    actual: Sequence[dict], expected: Sequence[dict], tolerances: Tolerances
) -> list[OutputComparison]:
    """Compare every expected output of every sample; a missing output fails."""
    comparisons = []
    for index, (outputs, references) in enumerate(zip(actual, expected)):
        for name, reference in references.items():
            if name not in outputs:
                comparisons.append(OutputComparison(
                    index, name, False, None, None,
                    f"the model returned no output {name!r} (it returned {sorted(outputs)})",
                ))
                continue
            comparisons.append(compare_output(index, name, outputs[name], reference, tolerances))
    return comparisons


def worst(comparisons: Sequence[OutputComparison]) -> tuple[Optional[float], Optional[float]]:
    """Return (largest max abs error, lowest cosine) over the comparisons that have them."""
    errors = [item.max_abs_error for item in comparisons if item.max_abs_error is not None]
    cosines = [item.cosine for item in comparisons if item.cosine is not None]
    return (max(errors) if errors else None, min(cosines) if cosines else None)


def percentile_ms(latencies_ms: Sequence[float], q: float) -> Optional[float]:
    """Return the q-th percentile (linear interpolation) of latencies, or None when empty."""
    if not latencies_ms:
        return None
    return round(float(np.percentile(np.asarray(latencies_ms), q)), 4)


def _finite(value: float) -> Optional[float]:
    # JSON, and so the Kubernetes API, has no NaN or infinity.
    return value if math.isfinite(value) else None
