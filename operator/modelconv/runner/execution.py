"""Running one claimed check on this machine: fetch, predict, compare, report.

This module does not use the Kubernetes API. It turns a CheckSpec into a CheckOutcome, which
the agent writes into the check's status. Failure classes:
- permanent for this check (expired URLs, unreadable data, a package that does not load,
  outputs beyond tolerance): a Failed outcome whose reason names the cause;
- cancellation (the claim was lost or the agent is stopping): CheckCancelled propagates and
  nothing is reported;
- anything else is a bug or an infrastructure fault and propagates to the agent, which
  reports it as RunnerError.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Optional

from ..errors import strip_ansi
from .artifacts import (
    INPUTS,
    OUTPUTS,
    CheckDataError,
    download,
    ensure_not_expired,
    locate_package,
    read_samples,
    unpack_zip,
    upload,
    zip_folder,
)
from .backends import Backend, BackendRequest, BackendRun, PackageLoadFailure, UnitRun
from .claims import CheckOutcome
from .compare import OutputComparison, compare_samples, percentile_ms, worst
from .resource import (
    CHECKS_PASSED,
    DEADLINE_EXCEEDED,
    INVALID_CHECK_DATA,
    MAX_MESSAGE,
    PACKAGE_LOAD_FAILED,
    TOLERANCE_EXCEEDED,
    CheckSpec,
    UnitResult,
    timestamp,
    utc_now,
)

log = logging.getLogger(__name__)

REPORT_API_VERSION = "modelconv.io/report/v1"


@dataclasses.dataclass(frozen=True)
class CheckContext:
    """Identity of the check and its runner, for the report."""

    name: str
    namespace: str
    runner: str
    labels: dict
    attempt: int


def execute_check(spec: CheckSpec, backend: Backend, context: CheckContext, workdir: Path,
                  session, cancelled: Optional[threading.Event] = None) -> CheckOutcome:
    """Run the check in `workdir` (emptied first) and return its outcome."""
    started = utc_now()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    comparisons: dict[Optional[str], list[OutputComparison]] = {}
    run: Optional[BackendRun] = None
    try:
        run, results, comparisons = _predict_and_compare(spec, backend, workdir, session,
                                                        cancelled or threading.Event())
        outcome = _outcome(results)
    except CheckDataError as error:
        outcome = CheckOutcome(False, error.reason, _bounded(error.message))
    except PackageLoadFailure as error:
        message = _bounded(f"the package does not load: {error}")
        result = UnitResult(backend=backend.name, passed=False, reason=PACKAGE_LOAD_FAILED,
                            message=message)
        outcome = CheckOutcome(False, PACKAGE_LOAD_FAILED, message, [result])
    report = build_report(spec, backend.name, context, outcome, run, comparisons, started)
    return _publish(spec, session, outcome, report, run)


def _predict_and_compare(spec: CheckSpec, backend: Backend, workdir: Path, session,
                         cancelled: threading.Event):
    if spec.deadline <= utc_now():
        raise CheckDataError(DEADLINE_EXCEEDED, "the check's deadline passed before it started")
    ensure_not_expired(_presigned_objects(spec))
    package = _fetch_package(spec, workdir, session)
    inputs_file = download(session, spec.inputs, workdir / "inputs")
    expected_file = inputs_file
    if spec.expected_outputs.key != spec.inputs.key:
        expected_file = download(session, spec.expected_outputs, workdir / "expected")
    samples = read_samples(inputs_file, spec.inputs.key, INPUTS)
    expected = read_samples(expected_file, spec.expected_outputs.key, OUTPUTS)
    if len(samples) != len(expected):
        raise CheckDataError(
            INVALID_CHECK_DATA,
            f"{spec.inputs.key} has {len(samples)} samples but {spec.expected_outputs.key} has "
            f"{len(expected)}",
        )
    request = BackendRequest(
        package=package, samples=samples, compute_units=list(spec.compute_units),
        warmup_runs=spec.warmup_runs, measured_runs=spec.measured_runs,
        workdir=workdir, cancelled=cancelled, output_names=list(expected[0]) if expected else [],
    )
    run = backend.run(request)
    results, comparisons = [], {}
    for unit in run.units:
        unit_comparisons = compare_samples(unit.outputs, expected, spec.tolerances)
        comparisons[unit.compute_unit] = unit_comparisons
        results.append(unit_result(backend.name, unit, unit_comparisons))
    return run, results, comparisons


def _presigned_objects(spec: CheckSpec) -> dict:
    objects = {
        "package": spec.package,
        "inputs": spec.inputs,
        "expectedOutputs": spec.expected_outputs,
        "reportUpload": spec.report_upload,
    }
    if spec.compiled_model_upload is not None:
        objects["compiledModelUpload"] = spec.compiled_model_upload
    return objects


def _fetch_package(spec: CheckSpec, workdir: Path, session) -> Path:
    archive = download(session, spec.package, workdir / "package.zip")
    unpacked = unpack_zip(archive, workdir / "package")
    archive.unlink()
    return locate_package(unpacked)


def unit_result(backend: str, unit: UnitRun, comparisons: list[OutputComparison]) -> UnitResult:
    """Summarize one compute unit: worst errors, latency percentiles, pass or fail."""
    max_abs_error, cosine = worst(comparisons)
    failures = [item for item in comparisons if not item.passed]
    reason, message = unit.failure_reason, unit.failure_message
    if reason is None and failures:
        first = failures[0]
        reason = TOLERANCE_EXCEEDED
        message = (f"{len(failures)} of {len(comparisons)} output comparisons failed; first: "
                   f"output {first.output!r} of sample {first.sample}: {first.problem}")
    if reason is None and not comparisons:
        reason, message = INVALID_CHECK_DATA, "the expected outputs file contains no outputs"
    return UnitResult(
        backend=backend,
        compute_unit=unit.compute_unit,
        passed=reason is None,
        max_abs_error=max_abs_error,
        cosine=cosine,
        latency_p50_ms=percentile_ms(unit.latencies_ms, 50),
        latency_p90_ms=percentile_ms(unit.latencies_ms, 90),
        load_ms=unit.load_ms,
        compile_ms=unit.compile_ms,
        reason=reason,
        message=_bounded(message) if message else None,
    )


def _outcome(results: list[UnitResult]) -> CheckOutcome:
    failed = [result for result in results if not result.passed]
    backend = results[0].backend if results else "unknown"
    if not failed:
        return CheckOutcome(
            True, CHECKS_PASSED,
            f"{len(results)} of {len(results)} results passed (backend {backend})", results,
        )
    first = failed[0]
    where = f"on {first.compute_unit}" if first.compute_unit else f"with {backend}"
    return CheckOutcome(
        False, first.reason or TOLERANCE_EXCEEDED,
        _bounded(f"{len(failed)} of {len(results)} results failed; {where}: {first.message}"),
        results,
    )


def build_report(spec: CheckSpec, backend: str, context: CheckContext, outcome: CheckOutcome,
                 run: Optional[BackendRun], comparisons: dict, started) -> dict:
    """Return the JSON report: the outcome, per-output comparisons and raw latencies.

    It names objects by key only; presigned URLs never enter it.
    """
    units = run.units if run else []
    return {
        "apiVersion": REPORT_API_VERSION,
        "kind": "CoreMLCheckReport",
        "check": {"name": context.name, "namespace": context.namespace,
                  "attempt": context.attempt},
        "runner": {"name": context.runner, "labels": context.labels,
                   "host": run.host if run else {}},
        "backend": backend,
        "started": timestamp(started),
        "finished": timestamp(utc_now()),
        "succeeded": outcome.succeeded,
        "reason": outcome.reason,
        "message": outcome.message,
        "objects": {"package": spec.package.key, "inputs": spec.inputs.key,
                    "expectedOutputs": spec.expected_outputs.key},
        "tolerances": spec.tolerances.document(),
        "results": [result.document() for result in outcome.results],
        "comparisons": {str(unit): [item.document() for item in items]
                        for unit, items in comparisons.items()},
        "latenciesMs": {str(unit.compute_unit): unit.latencies_ms for unit in units},
    }


def _publish(spec: CheckSpec, session, outcome: CheckOutcome, report: dict,
             run: Optional[BackendRun]) -> CheckOutcome:
    """Upload the report and the compiled model; an upload failure fails the check."""
    data = json.dumps(report, indent=2, sort_keys=True).encode()
    try:
        upload(session, spec.report_upload, data, "application/json")
        compiled_key = _upload_compiled(spec, session, run) if outcome.succeeded else None
    except CheckDataError as error:
        if not outcome.succeeded:
            # The check failed already; its reason matters more than the missing report.
            log.warning("report of failed check not uploaded: %s", error.message)
            return outcome
        return dataclasses.replace(
            outcome, succeeded=False, reason=error.reason,
            message=_bounded(f"{error.message}; the checks themselves passed"),
        )
    return dataclasses.replace(outcome, report_key=spec.report_upload.key,
                               compiled_model_key=compiled_key)


def _upload_compiled(spec: CheckSpec, session, run: Optional[BackendRun]) -> Optional[str]:
    if run is None or run.compiled_model is None or spec.compiled_model_upload is None:
        return None
    upload(session, spec.compiled_model_upload, zip_folder(run.compiled_model), "application/zip")
    return spec.compiled_model_upload.key


def _bounded(text: str) -> str:
    # Messages quote Core ML and coremltools errors, which may color their text for terminals.
    text = strip_ansi(text)
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."
