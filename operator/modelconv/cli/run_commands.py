"""`modelconv run`, `modelconv schema` and `modelconv stage`.

`run` executes the pipeline in this process and exits 0 (published), 1 (conversion or
validation failed, or an internal error), 2 (bad input: invalid spec, source not found,
invalid model), 130 (Ctrl-C) or 143 (SIGTERM). A classified failure prints its reason and
what to do, never a traceback. `modelconv --debug run ...` adds the traceback of an
internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Iterator, Optional

from ..errors import INVALID_ARGUMENT, ConversionError, Terminated, plain_message

# Loggers of the libraries that a run drives. Their warnings are noise to users, so they are
# silenced unless --debug is set.
LIBRARY_LOGGERS = ("coremltools", "torch", "onnxscript", "onnx_ir", "onnx2torch", "transformers")

# The shell's convention for a process ended by SIGINT (128 + 2) or SIGTERM (128 + 15).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

DEBUG_HINT = "rerun with `modelconv --debug run ...` to see the stack trace"


def register(subparsers) -> None:
    run = subparsers.add_parser(
        "run",
        help="convert, validate and publish a model in this process",
        description=(
            "Run export, convert, validate and publish for a ModelConversion file on this"
            " machine. The release goes to --store, else spec.publish.store, else"
            " ./modelconv-releases. Exit codes: 0 published, 1 conversion or validation"
            " failed, 2 invalid input, 130 interrupted (Ctrl-C), 143 stopped by SIGTERM."
        ),
    )
    run.add_argument("file", metavar="FILE.yaml", help="ModelConversion file")
    run.add_argument(
        "--store",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="release store; overrides spec.publish.store (default ./modelconv-releases)",
    )
    run.add_argument(
        "--output",
        choices=("text", "json"),
        default="text",
        help="json: print one JSON document with the outcome on stdout, progress on stderr",
    )
    run.add_argument("--junit", metavar="FILE", type=Path, help="write JUnit XML results to FILE")
    run.add_argument(
        "--workdir",
        metavar="DIR",
        type=Path,
        help="work directory for stage files, kept after the run (default: a temporary folder)",
    )
    run.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the temporary work directory after a successful run (kept anyway when a"
             " stage failed)",
    )
    run.set_defaults(func=run_command)

    schema = subparsers.add_parser(
        "schema", help="print the JSON Schema of ModelConversion files",
        description="Print the JSON Schema of a ModelConversion document, for editors and CI.",
    )
    schema.set_defaults(func=schema_command)

    stage = subparsers.add_parser(
        "stage",
        help="run one pipeline stage inside a Kubernetes Job",
        description=(
            "Run one stage as the operator's Jobs do: read the run file, fetch earlier"
            " artifacts from the store cache, write artifacts and result.json. Exit codes:"
            " 0 done, 2 permanent failure, 1 transient failure (the Job retries)."
        ),
    )
    stage.add_argument("name", choices=("export", "convert", "validate", "publish"))
    stage.add_argument(
        "--run",
        metavar="RUN.json",
        type=Path,
        default=Path("/etc/modelconv/run.json"),
        help="run file written by the controller (default /etc/modelconv/run.json)",
    )
    stage.add_argument(
        "--workdir", metavar="DIR", type=Path, help="scratch folder (default: a temporary folder)"
    )
    stage.set_defaults(func=stage_command)


# --- run ----------------------------------------------------------------------------------


def quiet_libraries(debug: bool) -> None:
    """Silence library warnings and progress bars, unless `--debug` is set."""
    if debug:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        return
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    # tqdm progress bars (coremltools' conversion passes) would break the live display.
    os.environ.setdefault("TQDM_DISABLE", "1")


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout, by Python or by native code, to stderr meanwhile.

    `--output json` promises one JSON document on stdout; converters print from C++ too.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _observer(output: str):
    from ..progress import LiveProgress, PlainProgress

    if output == "json":
        return PlainProgress(sys.stderr, summary=False)
    if sys.stdout.isatty():
        return LiveProgress()
    return PlainProgress(sys.stdout)


def run_command(args: argparse.Namespace) -> int:
    from ..spec import load_conversion

    # SIGTERM (from `timeout`, or a CI runner that cancels a job) cleans up and reports like
    # Ctrl-C, instead of killing the process mid-write.
    signal.signal(signal.SIGTERM, _raise_terminated)
    quiet_libraries(args.debug)
    try:
        check_run_options(args)
        conversion = load_conversion(args.file)
        if args.workdir is not None:
            from ..pipeline.run import check_workdir_apart, resolve_store

            check_workdir_apart(args.workdir, resolve_store(conversion, args.store))
    except ConversionError as error:
        return _report_early_failure(args, error)

    from ..pipeline.run import run_pipeline

    observer = _observer(args.output)
    redirect = stdout_to_stderr() if args.output == "json" else contextlib.nullcontext()
    try:
        with redirect:
            outcome = run_pipeline(
                conversion,
                store=args.store,
                workdir=args.workdir,
                keep_workdir=args.keep_workdir,
                observer=observer,
            )
    except KeyboardInterrupt as interrupt:
        close = getattr(observer, "close", None)
        if close is not None:
            close()
        # The stop may have come after the manifest, so read the store to find what is visible.
        from ..pipeline.publish import stopped_run_state

        state = stopped_run_state(conversion, args.store)
        stopped = getattr(interrupt, "outcome", None)  # None when Ctrl-C came before the run
        terminated = isinstance(interrupt, Terminated)
        exit_code = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
        kept_workdir = stopped.workdir if stopped is not None and stopped.workdir_kept else None
        if args.output == "json":
            document = failure_document(args, "interrupted", "Interrupted", state.message())
            document.update(exit_code=exit_code, **run_identity(conversion, args.store))
            if stopped is not None:
                document.update(stages=stopped.entries, skipped=stopped.skipped)
            if kept_workdir is not None:
                document.update(workdir=str(kept_workdir),
                                report=str(kept_workdir / "report.html"))
            print(json.dumps(document, indent=2))
        where = (f"; the report and the files made so far are in {kept_workdir}"
                 if kept_workdir else "")
        next_step = f". {state.next_step}" if state.next_step else ""
        stop = "terminated (SIGTERM)" if terminated else "interrupted"
        print(f"modelconv: {stop}; {state.summary}{where}{next_step}", file=sys.stderr)
        return exit_code
    if args.junit:
        _write_junit(outcome, args.junit)

    if args.output == "json":
        print(json.dumps(outcome_document(outcome, args.file), indent=2))
    if outcome.internal_error is not None:
        _print_internal_error(outcome.internal_error, args.debug)
    elif args.output == "json" and not outcome.succeeded:
        print(f"modelconv: {outcome.reason}: {outcome.message}", file=sys.stderr)
    return outcome.exit_code


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def check_run_options(args: argparse.Namespace) -> None:
    """Reject paths that cannot work before any stage spends minutes converting."""
    if args.store is not None and not args.store.strip():
        raise ConversionError(
            INVALID_ARGUMENT,
            "--store is empty (an unset variable?); give a folder or s3://bucket/prefix,"
            " or leave the option out",
        )
    local_store = None
    if args.store and not args.store.startswith("s3://"):
        local_store = Path(args.store.removeprefix("file://"))
    for option, path in (("--store", local_store), ("--workdir", args.workdir)):
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            raise ConversionError(
                INVALID_ARGUMENT, f"{option} {path} is a file, not a folder; give a folder"
            )
        parent = _first_existing_parent(path) if path is not None else None
        if parent is not None and not parent.is_dir():
            raise ConversionError(
                INVALID_ARGUMENT,
                f"{option} {path}: {parent} is a file, so no folder can be made under it;"
                " give a path under a folder",
            )
    if args.junit is not None and args.junit.is_dir():
        raise ConversionError(
            INVALID_ARGUMENT, f"--junit {args.junit} is a folder; give a file name such as"
            f" {args.junit / 'modelconv-junit.xml'}"
        )
    # The JUnit file is written after the run, so a folder that cannot take it would
    # otherwise fail only once the release is published.
    if args.junit is not None:
        _check_folder_can_be_written("--junit", args.junit, args.junit.parent)
    if args.workdir is not None:
        from ..pipeline.run import check_workdir

        check_workdir(Path(args.workdir))
        _check_folder_can_be_written("--workdir", args.workdir, args.workdir)


def _first_existing_parent(path: Path) -> Path:
    """Return the nearest parent of `path` that exists (the file system root at worst)."""
    existing = Path(path).absolute().parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def _check_folder_can_be_written(option: str, path: Path, folder: Path) -> None:
    """Reject `path` unless `folder` is a writable folder or can be created as one."""
    existing = Path(folder).absolute()
    if not existing.exists():
        existing = _first_existing_parent(existing)
    if not existing.is_dir():
        raise ConversionError(
            INVALID_ARGUMENT,
            f"{option} {path}: {existing} is a file, so no folder can be made under it;"
            " give a path under a folder",
        )
    _probe_write(option, path, existing)


def _probe_write(option: str, path: Path, folder: Path) -> None:
    # Permission bits are not enough (root ignores them, and /proc rejects every new file),
    # so create and remove a file there.
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConversionError(
            INVALID_ARGUMENT,
            f"{option} {path}: cannot write in {folder} ({error.strerror or error});"
            " give a path in a folder you can write to",
        ) from None


def _write_junit(outcome, path: Path) -> None:
    """Write the JUnit file. A failed write prints one line and keeps the run's exit code."""
    from ..pipeline.junit import write_junit

    try:
        write_junit(outcome, path)
    except OSError as error:
        published = "the release was published, but " if outcome.succeeded else ""
        print(
            f"modelconv: {published}the JUnit file {path} was not written:"
            f" {error.strerror or error}",
            file=sys.stderr,
        )


def _report_early_failure(args: argparse.Namespace, error: ConversionError) -> int:
    """Report a failure found before any stage ran (the file itself is invalid)."""
    if args.output == "json":
        document = failure_document(args, "failed", error.reason, error.message)
        document["exit_code"] = error.exit_code
        print(json.dumps(document, indent=2))
    print(f"modelconv: {error.reason}: {error.message}", file=sys.stderr)
    return error.exit_code


def failure_document(args: argparse.Namespace, outcome: str, reason: str, message: str) -> dict:
    """Return the `--output json` document of a run that ended before its outcome existed.

    It has every key of `outcome_document`; what is not known (the file was invalid, the run
    was interrupted) is null.
    """
    return {
        "succeeded": False,
        "outcome": outcome,
        "exit_code": None,
        "reason": reason,
        "message": message,
        "file": args.file,
        "name": None,
        "model": None,
        "version": None,
        "store": args.store,
        "stages": [],
        "skipped": None,
        "release": None,
        "report": None,
        "workdir": str(args.workdir) if args.workdir else None,
    }


def run_identity(conversion, store: Optional[str]) -> dict:
    """Return the `name`, `model`, `version` and `store` of a valid ModelConversion."""
    from ..pipeline.run import resolve_store

    return {
        "name": conversion.metadata.name,
        "model": conversion.spec.publish.model,
        "version": conversion.spec.publish.version,
        "store": resolve_store(conversion, store),
    }


def _print_internal_error(error: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exception(error, file=sys.stderr)
        print(plain_message(f"modelconv: internal error: {type(error).__name__}: {error}"),
              file=sys.stderr)
        return
    first_line = plain_message((str(error).strip().splitlines() or [""])[0])[:300]
    print(
        f"modelconv: internal error: {type(error).__name__}: {first_line}; {DEBUG_HINT}",
        file=sys.stderr,
    )


def outcome_document(outcome, file: str) -> dict:
    """Return the `--output json` document of a run of the spec `file`."""
    report_dir: Optional[Path] = outcome.report_dir if outcome.workdir_kept else None
    release = outcome.release
    return {
        "succeeded": outcome.succeeded,
        "outcome": "succeeded" if outcome.succeeded else "failed",
        "exit_code": outcome.exit_code,
        "reason": outcome.reason,
        "message": outcome.message,
        "file": file,
        "name": outcome.conversion.metadata.name,
        "model": outcome.conversion.spec.publish.model,
        "version": outcome.conversion.spec.publish.version,
        "store": outcome.store,
        "stages": outcome.entries,
        "skipped": outcome.skipped,
        "release": release,
        "report": str(report_dir / "report.html") if report_dir else (
            release.get("report") if release else None
        ),
        "workdir": str(outcome.workdir) if outcome.workdir_kept else None,
    }


# --- schema and stage -----------------------------------------------------------------------


def schema_command(args: argparse.Namespace) -> int:
    from ..spec import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def stage_command(args: argparse.Namespace) -> int:
    quiet_libraries(args.debug)
    from ..pipeline.stage_job import run_stage_job

    return run_stage_job(args.name, args.run, workdir=args.workdir, debug=args.debug)
