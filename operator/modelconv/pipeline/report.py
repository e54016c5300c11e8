"""The run report: report.json with every figure, and report.html for people.

`build_report` gathers what a run measured into one JSON document: stage results, validation
figures per output and runtime, the conversion ladder's attempts and tool versions.
`write_report` writes it as report.json and renders it as report.html, a single file with
inline CSS and SVG that opens without a network.

The publish stage puts both files into the release; a failed run leaves them in its work
directory.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import math
import platform
from pathlib import Path
from typing import Any, Optional

from ..redaction import redact_document
from ..spec import ConversionSpec
from .stage import StageResult

REPORT_FORMAT = "modelconv.io/report/v1"

# Distributions whose versions a report and a manifest record, as pip names them.
TOOL_DISTRIBUTIONS = (
    "modelconv", "torch", "coremltools", "onnx", "onnxruntime", "onnxscript", "onnx2torch",
    "numpy", "transformers",
)

# Validation checks per output, in the order reports list them.
CHECKS = ("shape", "finite", "tolerance", "cosine", "psnr")
CHECK_TITLES = {
    "shape": "shape",
    "finite": "finite",
    "tolerance": "atol/rtol",
    "cosine": "cosine",
    "psnr": "PSNR",
}


def tool_versions() -> dict[str, str]:
    """Return the Python version and the installed versions of the converting libraries."""
    versions = {"python": platform.python_version()}
    for name in TOOL_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def spec_digest(spec: ConversionSpec) -> str:
    """Return the sha256 of the spec as canonical JSON (sorted keys, no spaces).

    `publish.store` is left out, because it names where a release goes, not what it is, and
    `modelconv run --store` or a cluster run may override it.
    """
    document = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    document.get("publish", {}).pop("store", None)
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- reading stage metrics ------------------------------------------------------------------


# Runtimes whose figures the validate stage reports, as its metrics name them.
VALIDATED_RUNTIMES = ("onnxruntime", "coreml")
FIGURES = ("max_abs_error", "max_rel_error", "cosine", "psnr_db", "histogram")


def coreml_executed(metrics: dict) -> bool:
    """Return whether the validate stage ran the Core ML program (not only read its shapes)."""
    return bool(metrics.get("coreml")) and "not executed" not in metrics.get("coreml_source", "")


def validation_rows(result: Optional[StageResult], spec: ConversionSpec) -> list[dict]:
    """Return one row per (runtime, output) from the validate stage's metrics.

    Each row has `runtime`, `output`, the figures (`max_abs_error`, `max_rel_error`,
    `cosine`, `psnr_db`, `histogram`), `violations`, `passed` and `checks`. `checks` maps each
    check name to True (passed), False (failed) or None (not applicable). PSNR is not
    applicable without minPsnr. For a Core ML program that was not executed, only the
    declared shape is.
    """
    if result is None:
        return []
    rows = []
    for runtime in VALIDATED_RUNTIMES:
        for output in result.metrics.get(runtime) or []:
            row = dict(output)
            row["runtime"] = runtime
            row["output"] = output.get("name", "")
            row["checks"] = output_checks(output, spec)
            if runtime == "coreml" and not coreml_executed(result.metrics):
                # Only the declared shape was compared; the default figures mean nothing.
                row.update({name: None for name in FIGURES})
                row["checks"] = {name: None for name in CHECKS} | {"shape": row["checks"]["shape"]}
                row["not_run"] = result.metrics.get("coreml_source", "")
            rows.append(row)
    return rows


def output_checks(output: dict, spec: ConversionSpec) -> dict[str, Optional[bool]]:
    """Return the pass/fail state of each check of one output.

    A stage that reports `checks` is taken at its word; otherwise the violations are
    classified by the check they name.
    """
    if isinstance(output.get("checks"), dict):
        return {name: output["checks"].get(name) for name in CHECKS}
    checks: dict[str, Optional[bool]] = {name: True for name in CHECKS}
    if spec.validation.min_psnr is None:
        checks["psnr"] = None
    for violation in output.get("violations", []):
        text = violation.lower()
        if "shape" in text:
            checks["shape"] = False
        elif "nan" in text or "infinity" in text or "output missing" in text:
            checks["finite"] = False
        elif "atol" in text:
            checks["tolerance"] = False
        elif "cosine" in text:
            checks["cosine"] = False
        elif "psnr" in text:
            checks["psnr"] = False
    return checks


def conversion_attempts(result: Optional[StageResult]) -> list[dict]:
    """Return the convert stage's ladder attempts: path, whether it succeeded, and why not."""
    if result is None:
        return []
    attempts = result.metrics.get("attempts") or []
    return [dict(attempt) for attempt in attempts if isinstance(attempt, dict)]


# --- building and writing ---------------------------------------------------------------------


def build_report(
    spec: ConversionSpec,
    results: list[StageResult],
    skipped: Optional[dict[str, str]] = None,
    *,
    name: str = "",
    release: Optional[dict] = None,
    package_signature: Optional[dict] = None,
) -> dict:
    """Return the report of a run as a JSON-ready dict.

    `name` is the ModelConversion's name. `package_signature` contains the inputs and
    outputs that the Core ML package declares, when the caller has read them.
    """
    by_stage = {result.stage: result for result in results}
    failed = next((result for result in results if not result.succeeded), None)
    validate = by_stage.get("validate")
    return {
        "format": REPORT_FORMAT,
        "name": name,
        "model": spec.publish.model,
        "version": spec.publish.version,
        "created": _finished_at(results),
        "succeeded": failed is None and bool(results),
        "reason": failed.reason if failed else "",
        "message": failed.message if failed else "",
        "stages": [stage_entry(result) for result in results],
        "skipped": dict(skipped or {}),
        "validation": {
            "source": (validate.metrics.get("coreml_source", "") if validate else ""),
            "tolerances": spec.validation.model_dump(
                mode="json", by_alias=True, include={"atol", "rtol", "min_cosine", "min_psnr"}
            ),
            "outputs": json_safe(validation_rows(validate, spec)),
        },
        "conversion_attempts": json_safe(conversion_attempts(by_stage.get("convert"))),
        "signature": signature(spec),
        "package_signature": package_signature,
        "tools": tool_versions(),
        "spec_sha256": spec_digest(spec),
        # Source URLs may be presigned: the report shows them redacted.
        "spec": redact_document(spec.model_dump(mode="json", by_alias=True, exclude_none=True)),
        "release": release,
    }


def _finished_at(results: list[StageResult]) -> str:
    """Return when the last stage finished, as RFC 3339 UTC.

    Taken from the results rather than the clock, so a retried publish stage in a cluster
    writes byte-identical reports and its release stays publishable.
    """
    finished = max((result.finished or result.started for result in results), default=0.0)
    moment = datetime.datetime.fromtimestamp(finished, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def stage_entry(result: StageResult) -> dict:
    """Return one stage's result as JSON: outcome, timings, metrics and artifact sizes."""
    return {
        "stage": result.stage,
        "succeeded": result.succeeded,
        "reason": result.reason,
        "message": result.message,
        "started": result.started,
        "finished": result.finished,
        "duration_seconds": round(result.duration_seconds, 3),
        "metrics": json_safe(result.metrics),
        "artifacts": {
            name: {"file": Path(path).name, "size": artifact_size(Path(path))}
            for name, path in result.artifacts.items()
        },
    }


def signature(spec: ConversionSpec) -> dict:
    """Return the model's inputs and outputs as the spec declares them."""
    return {
        "inputs": [
            {"name": item.name, "shape": list(item.shape), "dtype": item.dtype}
            for item in spec.inputs
        ],
        "outputs": [{"name": item.name} for item in spec.outputs],
    }


def artifact_size(path: Path) -> int:
    """Return the size in bytes of a file, or of all files under a folder."""
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size if path.exists() else 0


def json_safe(value: Any) -> Any:
    """Return `value` with paths as strings, tuples as lists and non-finite floats as strings."""
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "nan": JSON has no literal for them
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_safe(value.item())
    return value


def write_report(report: dict, folder: Path) -> tuple[Path, Path]:
    """Write report.json and report.html into `folder`; return both paths."""
    from .report_html import render_html

    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "report.json"
    html_path = folder / "report.html"
    json_path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path
