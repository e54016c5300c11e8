"""The whole pipeline in one process: what `modelconv run` executes.

`run_pipeline` runs export, convert, validate and publish in order, each in its own folder
under one work directory, and hands every stage the artifacts and results of the stages
before it. `train` and `device` need a cluster (a training image, the macOS runner pool), so
a local run lists them as skipped when the spec enables them.

Failure classes:
- a stage raising `ConversionError`, or returning a failed `StageResult`, ends the run with
  that stage's reason. Nothing is published, and the kept work directory contains the report;
- any other exception is a bug: the run ends with reason `InternalError`, and the exception is
  kept on the outcome so the CLI can show its traceback under `--debug`.
"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

from .. import errors
from ..errors import ConversionError, plain_message
from ..progress import RunObserver, SilentProgress
from ..spec import ConversionSpec, ModelConversion
from .stage import StageContext, StageResult

# Used when neither `--store` nor spec.publish.store names a store.
DEFAULT_STORE = "./modelconv-releases"

# Reason of a run ended by an exception that no stage classified.
INTERNAL_ERROR = "InternalError"

# Stages a local run executes, with the module and function that implement each.
LOCAL_STAGES = {
    "export": ("modelconv.pipeline.export", "run_export"),
    "convert": ("modelconv.pipeline.convert", "run_convert"),
    "validate": ("modelconv.pipeline.validate", "run_validate"),
    "publish": ("modelconv.pipeline.publish", "run_publish"),
}

SKIPPED_CLUSTER_ONLY = "skipped (cluster only)"
# Marks a folder as a modelconv work directory: a later run may delete and rewrite its stage
# folders and report files.
WORKDIR_MARKER = ".modelconv-workdir"


@dataclasses.dataclass
class RunOutcome:
    """The result of a whole run: every stage that ran, and the release when one was made."""

    conversion: ModelConversion
    store: str
    workdir: Path
    results: list[StageResult] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    # Publish stage metrics: location, files and digests of the release.
    release: Optional[dict] = None
    # Where report.json and report.html of this run are on this machine, when written.
    report_dir: Optional[Path] = None
    # Each stage's result as JSON (report.stage_entry), taken when the stage finished, while
    # its artifacts still exist to be measured.
    entries: list[dict] = dataclasses.field(default_factory=list)
    # The unclassified exception that ended the run, for `--debug`.
    internal_error: Optional[BaseException] = None
    workdir_kept: bool = False
    # True once a stage has begun to write into the work directory.
    stage_started: bool = False
    # True when Ctrl-C or SIGTERM stopped the run, even if every stage recorded before it
    # succeeded.
    interrupted: bool = False
    # What stopped an interrupted run, for the report: "Ctrl-C" or "SIGTERM".
    stopped_by: str = ""

    @property
    def succeeded(self) -> bool:
        return (not self.interrupted and bool(self.results)
                and all(result.succeeded for result in self.results))

    @property
    def failed_stage(self) -> Optional[StageResult]:
        return next((result for result in self.results if not result.succeeded), None)

    @property
    def reason(self) -> str:
        failed = self.failed_stage
        return failed.reason if failed else ""

    @property
    def message(self) -> str:
        failed = self.failed_stage
        return failed.message if failed else ""

    @property
    def exit_code(self) -> int:
        if self.succeeded:
            return errors.EXIT_OK
        if self.reason in errors.BAD_INPUT_REASONS:
            return errors.EXIT_BAD_INPUT
        return errors.EXIT_FAILED

    def result(self, stage: str) -> Optional[StageResult]:
        return next((result for result in self.results if result.stage == stage), None)


def resolve_store(conversion: ModelConversion, store: Optional[str]) -> str:
    """Pick the release store: `--store`, else spec.publish.store, else `DEFAULT_STORE`."""
    return store or conversion.spec.publish.store or DEFAULT_STORE


def with_store(conversion: ModelConversion, store: str) -> ModelConversion:
    """Return a copy of the conversion whose spec.publish.store is `store`."""
    spec = conversion.spec
    publish = spec.publish.model_copy(update={"store": store})
    return conversion.model_copy(update={"spec": spec.model_copy(update={"publish": publish})})


def skipped_stages(spec: ConversionSpec) -> dict[str, str]:
    """Return the stages the spec enables that only a cluster runs, with why they are skipped."""
    skipped = {}
    if spec.train is not None:
        skipped["train"] = SKIPPED_CLUSTER_ONLY
    if spec.validation.device.enabled:
        skipped["device"] = SKIPPED_CLUSTER_ONLY
    return skipped


def displayed_stages(skipped: dict[str, str]) -> list[str]:
    """Return the stages of a local run in pipeline order, skipped ones included."""
    order = ("train", "export", "convert", "validate", "device", "publish")
    return [stage for stage in order if stage in LOCAL_STAGES or stage in skipped]


def stage_function(stage: str):
    """Import and return `run_<stage>`; heavy libraries load only when a run needs them."""
    module_name, function_name = LOCAL_STAGES[stage]
    return getattr(importlib.import_module(module_name), function_name)


def run_stage(stage: str, context: StageContext) -> StageResult:
    """Run one stage and return its result; a classified failure becomes a failed result.

    Exceptions that are not `ConversionError` propagate to the caller.
    """
    started = time.time()
    try:
        result = stage_function(stage)(context)
    except ConversionError as error:
        result = StageResult(stage=stage, succeeded=False, reason=error.reason,
                             message=error.message, started=started)
        # A stage may attach what it measured before it failed (validation figures).
        result.metrics = dict(getattr(error, "metrics", None) or {})
    # The runner's clock is the stage's wall time, whatever the stage stamped on its result.
    result.started, result.finished = started, time.time()
    if not result.succeeded and not result.reason:
        result.reason = errors.CONVERSION_FAILED if stage == "convert" else INTERNAL_ERROR
    return result


def run_pipeline(
    conversion: ModelConversion,
    *,
    store: Optional[str] = None,
    workdir: Optional[Path] = None,
    keep_workdir: bool = False,
    observer: Optional[RunObserver] = None,
) -> RunOutcome:
    """Run export, convert, validate and publish; return the outcome.

    A failing stage, classified or not, ends the run with a failed result instead of raising.
    KeyboardInterrupt propagates with the outcome so far as its `outcome` attribute, and an
    error while writing the failure report propagates too. A `workdir` that contains other
    files than an earlier run's, or that overlaps a folder store, raises ConversionError
    (InvalidArgument) before anything runs.

    The release goes to `store` (or the spec's, or `DEFAULT_STORE`). Stages work in
    `workdir`, which is kept, or else in a new temporary folder, which is removed after a
    successful run unless `keep_workdir` is set. After a failure or an interrupt the work
    directory is kept when a stage had begun: it contains the report and the artifacts made
    so far. A temporary folder of a run refused before any stage (the version exists, the
    store is unusable) is removed.
    """
    observer = observer or SilentProgress()
    store_url = resolve_store(conversion, store)
    conversion = with_store(conversion, store_url)
    temporary = workdir is None
    if workdir is not None:
        root = Path(workdir)
        check_workdir(root)
        check_workdir_apart(root, store_url)
        root.mkdir(parents=True, exist_ok=True)
        (root / WORKDIR_MARKER).touch()
        keep_workdir = True
    else:
        root = Path(tempfile.mkdtemp(prefix="modelconv-run-"))
    outcome = RunOutcome(conversion=conversion, store=store_url, workdir=root.resolve(),
                         skipped=skipped_stages(conversion.spec))

    observer.run_started(displayed_stages(outcome.skipped), outcome.skipped)
    new_store_folders = _missing_folders(store_url)
    try:
        refusal = _guarded(outcome, "publish", lambda: check_release_absent(conversion))
        if refusal is not None:
            _record(outcome, refusal)
            observer.stage_finished(refusal)
            if refusal.succeeded:
                outcome.release = dict(refusal.metrics)
        else:
            _run_stages(outcome, observer)
    except KeyboardInterrupt as interrupt:
        outcome.interrupted = True
        outcome.stopped_by = "SIGTERM" if isinstance(interrupt, errors.Terminated) else "Ctrl-C"
        interrupt.outcome = outcome  # read by the CLI after _finish below has run
        raise
    finally:
        _finish(outcome, keep_workdir, temporary)
        if outcome.release is None:
            _remove_empty(new_store_folders)
    observer.run_finished(outcome)
    return outcome


def _missing_folders(store_url: str) -> list[Path]:
    """Return the folders of a folder store's path that do not exist yet, deepest first.

    The store check creates them, so a run that then fails would leave them empty.
    """
    if store_url.startswith("s3://"):
        return []
    folders = []
    folder = Path(store_url.removeprefix("file://")).absolute()
    while not folder.exists() and folder != folder.parent:
        folders.append(folder)
        folder = folder.parent
    return folders


def _remove_empty(folders: list[Path]) -> None:
    """Remove each folder, deepest first, until one is missing or not empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def check_workdir(path: Path) -> None:
    """Raise InvalidArgument when `path` contains files and is no modelconv work directory.

    A run deletes and rewrites its stage folders (export/, convert/, ...) and report files
    there, so a folder of other files must not be used.
    """
    if not path.is_dir() or (path / WORKDIR_MARKER).exists() or not any(path.iterdir()):
        return
    raise ConversionError(
        errors.INVALID_ARGUMENT,
        f"--workdir {path} already holds files and is not a modelconv work directory (it has"
        f" no {WORKDIR_MARKER}); a run deletes and rewrites folders there, so give a new or"
        " empty folder",
    )


def check_workdir_apart(workdir: Path, store_url: str) -> None:
    """Raise InvalidArgument when the work directory and a folder store contain each other.

    A run deletes and rewrites its stage folders in the work directory, so a release there
    could be deleted, and a work directory inside the store puts stray folders among the
    models.
    """
    if store_url.startswith("s3://"):
        return
    store = Path(store_url.removeprefix("file://")).resolve()
    work = Path(workdir).resolve()
    if work == store or store in work.parents or work in store.parents:
        raise ConversionError(
            errors.INVALID_ARGUMENT,
            f"--workdir {workdir} and the store {store_url} overlap: a run deletes and rewrites"
            " folders in its work directory, so give two separate folders",
        )


def _guarded(outcome: RunOutcome, stage: str, call) -> Optional[StageResult]:
    """Return `call()`; an unclassified exception becomes a failed InternalError result."""
    started = time.time()
    try:
        return call()
    except Exception as error:  # a bug: record it, keep the traceback for --debug
        outcome.internal_error = error
        return StageResult(stage=stage, succeeded=False, reason=INTERNAL_ERROR,
                           message=plain_message(f"{type(error).__name__}: {error}"),
                           started=started, finished=time.time())


def check_release_absent(conversion: ModelConversion) -> Optional[StageResult]:
    """Return a failed publish result when the store is unusable or the version exists.

    An unwritable store counts as unusable (`Store.check_writable`).

    Checked before any stage runs, so a run that could never publish fails in seconds, not
    after a conversion: a version is immutable, and a new run always makes a new report.
    A version whose publish stopped after its manifest, made from this same spec, gets its
    index entry and channels finished instead, and the result is a succeeded publish.
    """
    from ..release import read_manifest
    from ..store import open_store

    spec = conversion.spec
    started = time.time()
    try:
        store = open_store(spec.publish.store)
        existing = read_manifest(store, spec.publish.model, spec.publish.version)
        if existing is None:
            store.check_writable(spec.publish.model)
    except ConversionError as error:
        return StageResult(stage="publish", succeeded=False, reason=error.reason,
                           message=error.message, started=started, finished=time.time())
    if existing is None:
        return None
    # A run stopped after the manifest: finish the index and channels, convert nothing.
    from .publish import finish_stopped_publish

    finished = finish_stopped_publish(store, spec, existing, started)
    if finished is not None:
        return finished
    location = store.url_of(f"{spec.publish.model}/{spec.publish.version}")
    return StageResult(
        stage="publish",
        succeeded=False,
        reason=errors.VERSION_EXISTS,
        message=(
            f"version {spec.publish.version} of {spec.publish.model} is already published at"
            f" {location}, and releases are immutable; set publish.version to a new version"
        ),
        started=started,
        finished=time.time(),
    )


def _run_stages(outcome: RunOutcome, observer: RunObserver) -> None:
    inputs: dict[str, Path] = {}
    previous: dict[str, StageResult] = {}
    for stage in LOCAL_STAGES:
        context = StageContext(
            spec=outcome.conversion.spec,
            workdir=outcome.workdir / stage,
            inputs=dict(inputs),
            previous=dict(previous),
            log=lambda message, stage=stage: observer.stage_message(stage, message),
        )
        # Reports name the ModelConversion; StageContext has no field for it yet.
        context.name = outcome.conversion.metadata.name
        # A reused --workdir may hold this stage's folder from an earlier run.
        shutil.rmtree(context.workdir, ignore_errors=True)
        context.workdir.mkdir(parents=True)
        outcome.stage_started = True
        observer.stage_started(stage)
        result = _guarded(outcome, stage, lambda: run_stage(stage, context))
        _record(outcome, result)
        observer.stage_finished(result)
        if not result.succeeded:
            return
        inputs.update(result.artifacts)
        previous[stage] = result
        if stage == "publish":
            outcome.release = dict(result.metrics)
            outcome.report_dir = context.workdir


def _record(outcome: RunOutcome, result: StageResult) -> None:
    from .report import stage_entry

    outcome.results.append(result)
    outcome.entries.append(stage_entry(result))


def _finish(outcome: RunOutcome, keep_workdir: bool, temporary: bool) -> None:
    """Write the report of a failed run into the work directory, and clean up after success.

    A temporary work directory in which no stage began contains nothing worth keeping.
    """
    if temporary and not outcome.stage_started and not keep_workdir:
        shutil.rmtree(outcome.workdir, ignore_errors=True)
        outcome.report_dir = None
        return
    if not outcome.succeeded:
        from .report import build_report, write_report

        report = build_report(outcome.conversion.spec, outcome.results, outcome.skipped,
                              name=outcome.conversion.metadata.name)
        if outcome.interrupted:
            done = [result.stage for result in outcome.results]
            report.update(succeeded=False, reason="Interrupted", message=(
                f"stopped by {outcome.stopped_by} after {', '.join(done)}" if done
                else f"stopped by {outcome.stopped_by} before any stage finished"))
        write_report(report, outcome.workdir)
        outcome.report_dir = outcome.workdir
        outcome.workdir_kept = True
        return
    if keep_workdir:
        outcome.workdir_kept = True
        return
    shutil.rmtree(outcome.workdir, ignore_errors=True)
    outcome.report_dir = None
