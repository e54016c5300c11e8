"""Numerical comparison of model outputs against reference outputs, with the spec's tolerances.

An output passes when its shape equals the reference shape, it holds no NaN, every element
satisfies |actual - expected| <= atol + rtol * |expected|, its cosine similarity is at least
minCosine and, when minPsnr is set, its PSNR is at least minPsnr.

Non-finite values: NaN in an output always fails. An infinity fails unless the reference holds
the same infinity at the same element (a model that masks with -inf produces -inf on purpose);
such elements are left out of the error figures.

Figures per output, worst over all samples:
- max_abs_error: max |actual - expected|;
- max_rel_error: max |actual - expected| / |expected| over elements with |expected| > atol
  (near-zero references would make any relative figure meaningless);
- cosine: cosine similarity of the flattened outputs (1.0 when both are all zeros);
- psnr_db: 10 * log10(peak^2 / MSE) with peak = max |expected|; None when MSE is 0;
- histogram: counts of absolute errors per bin of ERROR_BIN_EDGES.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from ..spec import ValidationSettings

# Bin edges of the absolute-error histogram; the last bin is [1, inf).
ERROR_BIN_EDGES = (0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, math.inf)


@dataclasses.dataclass
class OutputComparison:
    """Figures of one output over all samples and the checks it failed."""

    name: str
    shape: tuple = ()
    expected_shape: tuple = ()
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    cosine: float = 1.0
    psnr_db: Optional[float] = None
    histogram: list = dataclasses.field(default_factory=lambda: [0] * (len(ERROR_BIN_EDGES) - 1))
    violations: list = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "expected_shape": list(self.expected_shape),
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "cosine": self.cosine,
            "psnr_db": self.psnr_db,
            "histogram": {"edges": list(ERROR_BIN_EDGES[:-1]), "counts": self.histogram},
            "passed": self.passed,
            "violations": list(self.violations),
        }


def compare_outputs(
    actual: list[dict[str, np.ndarray]],
    expected: list[dict[str, np.ndarray]],
    names: list[str],
    settings: ValidationSettings,
) -> list[OutputComparison]:
    """Compare per-sample outputs by name; return one `OutputComparison` per output name."""
    comparisons = {name: OutputComparison(name) for name in names}
    for index, (got, want) in enumerate(zip(actual, expected)):
        for name in names:
            if name not in got:
                comparisons[name].violations.append(f"sample {index}: output missing")
                continue
            _accumulate(comparisons[name], index, np.asarray(got[name]), want[name], settings)
    return [comparisons[name] for name in names]


def _accumulate(
    result: OutputComparison,
    index: int,
    actual: np.ndarray,
    expected: np.ndarray,
    settings: ValidationSettings,
) -> None:
    result.shape = tuple(actual.shape)
    result.expected_shape = tuple(expected.shape)
    where = f"sample {index}"
    if actual.shape != expected.shape:
        result.violations.append(
            f"{where}: shape {tuple(actual.shape)} differs from the reference shape"
            f" {tuple(expected.shape)}"
        )
        return

    got = actual.astype(np.float64).ravel()
    want = expected.astype(np.float64).ravel()
    if np.isnan(want).any():
        result.violations.append(
            f"{where}: the reference itself holds NaN; choose inputs (validation.samples or"
            " samplesFile) for which the source model is finite"
        )
        return
    nan_count = int(np.isnan(got).sum())
    if nan_count:
        result.violations.append(f"{where}: NaN in {nan_count} of {got.size} elements")
    same_infinity = np.isinf(want) & (got == want)
    stray_inf = int((np.isinf(got) & ~same_infinity).sum())
    if stray_inf:
        result.violations.append(
            f"{where}: infinity in {stray_inf} elements where the reference differs"
        )
    if nan_count or stray_inf:
        # The error figures are meaningless here; inf keeps "worst error" honest.
        result.max_abs_error = math.inf
        return

    finite = ~same_infinity
    got, want = got[finite], want[finite]
    _add_figures(result, where, got, want, settings)


def _add_figures(result, where, got, want, settings: ValidationSettings) -> None:
    error = np.abs(got - want)
    magnitude = np.abs(want)
    if error.size == 0:
        return

    # Element-wise tolerance, as numpy.allclose defines it.
    limit = settings.atol + settings.rtol * magnitude
    outside = error > limit
    if outside.any():
        worst = int(np.argmax(error - limit))
        result.violations.append(
            f"{where}: {int(outside.sum())} of {error.size} elements exceed"
            f" atol + rtol * |expected| (worst: |error| {error[worst]:.3g} > limit"
            f" {limit[worst]:.3g}, expected {want[worst]:.6g}, got {got[worst]:.6g})"
        )

    significant = magnitude > settings.atol
    relative = float((error[significant] / magnitude[significant]).max()) if significant.any() else 0.0
    cosine = _cosine(got, want)
    psnr = _psnr(error, magnitude)
    if cosine < settings.min_cosine:
        result.violations.append(
            f"{where}: cosine {_below(cosine, settings.min_cosine)} < minCosine"
            f" {settings.min_cosine}"
        )
    if settings.min_psnr is not None and psnr is not None and psnr < settings.min_psnr:
        result.violations.append(f"{where}: PSNR {psnr:.1f} dB < minPsnr {settings.min_psnr} dB")

    result.max_abs_error = max(result.max_abs_error, float(error.max()))
    result.max_rel_error = max(result.max_rel_error, relative)
    result.cosine = min(result.cosine, cosine)
    if psnr is not None:
        result.psnr_db = psnr if result.psnr_db is None else min(result.psnr_db, psnr)
    counts, _ = np.histogram(error, bins=np.array(ERROR_BIN_EDGES[:-1] + (np.inf,)))
    result.histogram = [old + int(new) for old, new in zip(result.histogram, counts)]


def _cosine(got: np.ndarray, want: np.ndarray) -> float:
    norms = float(np.linalg.norm(got) * np.linalg.norm(want))
    if norms == 0.0:
        return 1.0 if not got.any() and not want.any() else 0.0
    return float(np.dot(got, want) / norms)


def _psnr(error: np.ndarray, magnitude: np.ndarray) -> Optional[float]:
    mse = float(np.mean(error**2))
    if mse == 0.0:
        return None
    peak = float(magnitude.max())
    if peak == 0.0:
        return 0.0
    return 10.0 * math.log10(peak**2 / mse)


def summarize_violations(comparisons: list[OutputComparison], limit: int = 5) -> str:
    """Return the failed checks as one message: output, check, value and limit."""
    lines = [
        f"output {item.name!r}: {violation}"
        for item in comparisons
        for violation in item.violations
    ]
    shown = "; ".join(lines[:limit])
    return shown + (f"; and {len(lines) - limit} more" if len(lines) > limit else "")


def has_shape_mismatch(comparisons: list[OutputComparison]) -> bool:
    return any(item.shape != item.expected_shape for item in comparisons)


def _below(value: float, limit: float) -> str:
    """Format `value`, which is below `limit`, with enough digits to show that it is."""
    for digits in range(6, 17):
        text = f"{value:.{digits}f}"
        if float(text) < limit:
            return text
    return repr(value)
