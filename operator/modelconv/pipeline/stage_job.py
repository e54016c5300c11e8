"""`modelconv stage NAME --run run.json`: one pipeline stage inside a Kubernetes Job.

The controller plans a run and writes the run file (docs/stage-contract.md). Each stage Job
reads it and fetches the artifacts of earlier stages from the store cache
(`<store>/.cache/<stage>/<key>/`). It runs the same stage function as `modelconv run`,
uploads its artifacts and then `result.json`, the commit marker, and writes a one-line
summary to the termination message.

Exit codes: 0 done (or already done: a retried Job finds the result and stops), 2 permanent
failure (the Job's podFailurePolicy fails it at once), 1 transient failure or a bug (the
Job retries within its backoffLimit).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Optional

from .. import errors
from ..errors import ConversionError, InvalidSpec, plain_message
from .stage import StageContext, StageResult

RUN_API_VERSION = "modelconv.io/run/v1"
JOB_STAGES = ("export", "convert", "validate", "publish")
# Earlier stages whose results a stage reads; `device` results exist only when the
# controller recorded them.
RESULT_STAGES = ("export", "convert", "validate", "device")
RESULT_FILE = "result.json"
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LIMIT = 4096
# Exit code for a transient failure or a bug: the Job retries.
EXIT_RETRY = 1


def cache_prefix(stage: str, key: str) -> str:
    """Return the store key prefix of one stage's cache folder."""
    return f".cache/{stage}/{key}"


# --- the run file ---------------------------------------------------------------------------


def read_run_file(path: Path):
    """Read the run file; return (conversion, store URL, stage keys).

    Raises InvalidSpec for a missing or malformed file: the controller must write another.
    """
    from ..spec import parse_conversion
    from .run import with_store

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidSpec("", f"run file not found: {path}; mount the run ConfigMap there or"
                              " pass --run") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidSpec("", f"cannot read the run file {path}: {error}") from None
    if not isinstance(document, dict) or document.get("apiVersion") != RUN_API_VERSION:
        raise InvalidSpec("apiVersion", f"the run file must have apiVersion {RUN_API_VERSION}")

    conversion = parse_conversion(document.get("conversion"))
    store = document.get("store") or conversion.spec.publish.store
    if not store:
        raise InvalidSpec("store", "the run file names no store and spec.publish.store is unset")
    conversion = with_store(conversion, store)
    if document.get("source") is not None:
        conversion = _with_source(conversion, document["source"])
    stages = document.get("stages")
    if not isinstance(stages, dict) or not all(
        isinstance(entry, dict) and isinstance(entry.get("key"), str) and entry["key"]
        for entry in stages.values()
    ):
        raise InvalidSpec("stages", "must map each planned stage to {\"key\": \"<sha256 hex>\"}")
    return conversion, store, {stage: entry["key"] for stage, entry in stages.items()}


def _with_source(conversion, source: dict):
    """Return the conversion with spec.source replaced by a train stage's output."""
    from ..spec import FileSource, Source

    kinds = {"exportedProgram": "exported_program", "torchscript": "torchscript", "onnx": "onnx"}
    kind = kinds.get(source.get("kind") if isinstance(source, dict) else None)
    if kind is None or not isinstance(source.get("uri"), str):
        raise InvalidSpec("source", "needs uri and kind (exportedProgram, torchscript or onnx)")
    try:
        replaced = Source(**{kind: FileSource(uri=source["uri"])})
    except ValueError as error:
        raise InvalidSpec("source.uri", str(error).splitlines()[0]) from None
    spec = conversion.spec.model_copy(update={"source": replaced})
    return conversion.model_copy(update={"spec": spec})


# --- results in the store ---------------------------------------------------------------


def result_document(result: StageResult, artifacts: dict[str, dict]) -> dict:
    """Return result.json of a stage: the StageResult with artifacts as stored files."""
    from .report import json_safe

    return {
        "stage": result.stage,
        "succeeded": result.succeeded,
        "reason": result.reason,
        "message": result.message,
        "metrics": json_safe(result.metrics),
        "artifacts": artifacts,
        "started": result.started,
        "finished": result.finished,
    }


def read_result(store, stage: str, key: str) -> Optional[dict]:
    """Return a stage's result.json from the cache, or None when it has none."""
    from ..store import ObjectNotFound

    try:
        data = store.get_bytes(f"{cache_prefix(stage, key)}/{RESULT_FILE}")
    except ObjectNotFound:
        return None
    try:
        return json.loads(data)
    except ValueError:
        raise ConversionError(
            errors.INTEGRITY_FAILED,
            f"{store.url_of(cache_prefix(stage, key))}/{RESULT_FILE} is not valid JSON;"
            " delete it so the stage runs again",
        ) from None


def _stage_result(document: dict, artifacts: dict[str, Path]) -> StageResult:
    return StageResult(
        stage=document["stage"],
        succeeded=bool(document.get("succeeded")),
        reason=document.get("reason", ""),
        message=document.get("message", ""),
        artifacts=artifacts,
        metrics=document.get("metrics") or {},
        started=float(document.get("started") or 0.0),
        finished=document.get("finished"),
    )


def fetch_inputs(store, stage: str, keys: dict[str, str], folder: Path):
    """Download the artifacts of the stages before `stage`; return (inputs, previous results).

    Folder artifacts arrive as deterministic zips and are unpacked. Every file is checked
    against the sha256 in its result.json.
    """
    inputs: dict[str, Path] = {}
    previous: dict[str, StageResult] = {}
    if stage in RESULT_STAGES:
        earlier_stages = RESULT_STAGES[: RESULT_STAGES.index(stage)]
    else:
        earlier_stages = RESULT_STAGES  # publish reads every result
    for earlier in earlier_stages:
        if earlier not in keys:
            continue
        document = read_result(store, earlier, keys[earlier])
        if document is None or not document.get("succeeded"):
            if earlier == "device":
                continue  # recorded by the controller only when a runner checked the package
            raise ConversionError(
                errors.STORE_UNAVAILABLE,
                f"no successful result of the {earlier} stage at"
                f" {store.url_of(cache_prefix(earlier, keys[earlier]))}; the controller runs"
                f" {stage} only after {earlier} succeeded, so this run will be retried",
                permanent=False,
            )
        artifacts = {}
        for name, entry in (document.get("artifacts") or {}).items():
            artifacts[name] = _fetch_artifact(store, earlier, keys[earlier], entry, folder / earlier)
        inputs.update(artifacts)
        previous[earlier] = _stage_result(document, artifacts)
    return inputs, previous


def _fetch_artifact(store, stage: str, key: str, entry: dict, folder: Path) -> Path:
    file_name = entry["file"]
    path = folder / file_name
    # A device result names its files under the check's folder: <check>/model.mlmodelc.zip.
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = store.get_file(f"{cache_prefix(stage, key)}/{file_name}", path)
    if entry.get("sha256") and digest.sha256 != entry["sha256"]:
        raise ConversionError(
            errors.INTEGRITY_FAILED,
            f"{store.url_of(cache_prefix(stage, key))}/{file_name} has sha256 {digest.sha256},"
            f" but result.json records {entry['sha256']}; delete the cache folder so the"
            f" {stage} stage runs again",
        )
    if file_name.endswith(".mlpackage.zip"):
        with zipfile.ZipFile(path) as archive:
            _check_members(archive, folder)
            archive.extractall(folder)
        return folder / file_name.removesuffix(".zip")
    return path


def _check_members(archive: zipfile.ZipFile, folder: Path) -> None:
    root = folder.resolve()
    for member in archive.namelist():
        target = (folder / member).resolve()
        if target != root and root not in target.parents:
            raise ConversionError(errors.INTEGRITY_FAILED,
                                  f"zip entry {member!r} points outside its folder")


def upload_result(store, result: StageResult, key: str, folder: Path) -> dict:
    """Upload a stage's artifacts, then its result.json; return the result document."""
    from ..release import zip_package

    prefix = cache_prefix(result.stage, key)
    artifacts = {}
    for name, path in result.artifacts.items():
        path = Path(path)
        if path.is_dir():
            path = _zipped(zip_package, path, folder)
        put = store.put_file(f"{prefix}/{path.name}", path, if_absent=False)
        artifacts[name] = {"file": path.name, "sha256": put.digest.sha256, "size": put.digest.size}
    document = result_document(result, artifacts)
    write_result_document(store, result.stage, key, document)
    return document


def release_present(store, spec) -> bool:
    """Return whether the spec's release has its manifest in the store.

    A cached publish result outlives a release deleted by hand. Without the manifest, the
    publish stage runs again, so it never reports a release that is gone.
    """
    from ..release import read_manifest

    return read_manifest(store, spec.publish.model, spec.publish.version) is not None


def write_result_document(store, stage: str, key: str, document: dict) -> None:
    """Write result.json into the stage's cache folder, replacing an earlier one."""
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    store.put_bytes(f"{cache_prefix(stage, key)}/{RESULT_FILE}", data, if_absent=False)


def _zipped(zip_package, path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{path.name}.zip"
    zip_package(path, target)
    return target


# --- running one stage ------------------------------------------------------------------


def write_termination_message(summary: dict) -> None:
    """Write the one-line summary where Kubernetes reads the termination message."""
    path = os.environ.get("MODELCONV_TERMINATION_LOG")
    if not path:
        # The kubelet creates this file in a pod; outside one, there is nothing to write.
        if not os.path.exists(TERMINATION_LOG):
            return
        path = TERMINATION_LOG
    line = json.dumps(summary, separators=(",", ":"))
    while len(line.encode("utf-8")) > TERMINATION_LIMIT and len(summary.get("message", "")) > 20:
        summary = dict(summary, message=summary["message"][: len(summary["message"]) // 2] + "…")
        line = json.dumps(summary, separators=(",", ":"))
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(line)


def _log(stage: str):
    def log(message: str) -> None:
        print(f"{stage}: {message}", file=sys.stderr, flush=True)

    return log


def execute_stage(stage: str, run_file: Path, workdir: Path) -> tuple[StageResult, bool]:
    """Run one stage as the run file describes and store its result.

    Returns the result and whether a failure is permanent. A result already in the cache is
    returned as it is (a retried Job that finished before). A permanent failure is stored
    too, so the controller can show its reason; a transient one is not.
    """
    from ..store import open_store
    from .run import stage_function

    conversion, store_url, keys = read_run_file(run_file)
    if stage not in keys:
        raise InvalidSpec("stages", f"the run file plans no {stage} stage")
    store = open_store(store_url)
    done = read_result(store, stage, keys[stage])
    if done is not None and done.get("succeeded") and (
            stage != "publish" or release_present(store, conversion.spec)):
        _log(stage)(f"already done: {store.url_of(cache_prefix(stage, keys[stage]))}")
        return _stage_result(done, {}), True

    inputs, previous = fetch_inputs(store, stage, keys, workdir / "inputs")
    context = StageContext(spec=conversion.spec, workdir=workdir / stage, inputs=inputs,
                           previous=previous, log=_log(stage))
    context.name = conversion.metadata.name
    context.workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    permanent = True
    try:
        result = stage_function(stage)(context)
    except ConversionError as error:
        if not error.permanent:
            raise
        result = StageResult(stage=stage, succeeded=False, reason=error.reason,
                             message=job_message(error),
                             metrics=dict(getattr(error, "metrics", None) or {}))
    result.started, result.finished = started, time.time()
    upload_result(store, result, keys[stage], workdir / "upload")
    return result, permanent


def job_message(error: ConversionError) -> str:
    """Return the error's message, with where a stage Job's store credentials come from."""
    if error.reason != errors.ACCESS_DENIED:
        return error.message
    return (f"{error.message}. Stage Jobs get their store credentials from the Secret that "
            "the operator's --store-secret names (chart value store.credentialsSecret)")


def run_stage_job(stage: str, run_file: Path, *, workdir: Optional[Path] = None,
                  debug: bool = False) -> int:
    """Run `modelconv stage`: execute, write the termination message, return the exit code."""
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"modelconv-{stage}-"))
    started = time.time()
    try:
        result, permanent = execute_stage(stage, run_file, root)
    except ConversionError as error:
        result = StageResult(stage=stage, succeeded=False, reason=error.reason,
                             message=job_message(error), started=started, finished=time.time())
        permanent = error.permanent
    except Exception as error:  # a bug or an infrastructure fault: let the Job retry
        if debug:
            traceback.print_exception(error, file=sys.stderr)
        message = plain_message(f"internal error: {type(error).__name__}: {error}")
        result = StageResult(stage=stage, succeeded=False, reason="InternalError",
                             message=message[:1000], started=started, finished=time.time())
        permanent = False
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)

    summary = {"stage": stage, "succeeded": result.succeeded, "reason": result.reason,
               "message": result.message}
    write_termination_message(summary)
    if result.succeeded:
        return errors.EXIT_OK
    print(f"modelconv: {stage} failed: {result.reason}: {result.message}", file=sys.stderr)
    return errors.EXIT_BAD_INPUT if permanent else EXIT_RETRY
