"""`modelconv apply`: create or update a ModelConversion in a cluster and follow it to the end.

The file is validated with the spec models first, then applied by server-side apply (field
manager `modelconv`) in the current kube context. With `--wait`, the command follows the
resource's status with a watch and shows the operator's progress stage by stage, with the same
display as `modelconv run`.

Exit codes:
- 0: Ready for the applied generation (or applied, without --wait);
- 1: a stage failed, the resource was deleted while waiting, or the API server was unreachable;
- 2: bad input (an invalid file, a resource the API server rejects, no kubeconfig or context,
  missing rights);
- 3: not Ready within --timeout;
- 130: interrupted.
Each ending prints one line with what happened and what to do, and
`modelconv --debug apply ...` adds the stack trace.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

from ..errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, INVALID_SPEC, ConversionError

EXIT_TIMEOUT = 3
# The shell's convention for a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
DEFAULT_TIMEOUT = "1h"
DURATION_PATTERN = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
# Fields that the API server sets; a file exported from a cluster may carry them.
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp",
                   "managedFields", "selfLink", "deletionTimestamp")
DEBUG_HINT = "rerun with `modelconv --debug apply ...` to see the stack trace"


def register(subparsers) -> None:
    apply = subparsers.add_parser(
        "apply",
        help="create or update a ModelConversion in a cluster and wait until it is Ready",
        description=(
            "Validate a ModelConversion file, apply it to the cluster of the current kube"
            " context (server-side apply), and with --wait follow the operator's progress"
            " until the applied generation is Ready. Needs get, create, patch and watch on"
            " modelconversions.modelconv.io. Exit codes: 0 Ready (or applied, without --wait),"
            " 1 failed or deleted, 2 invalid input, 3 timed out."
        ),
    )
    apply.add_argument("file", metavar="FILE.yaml", help="ModelConversion file")
    apply.add_argument("--wait", action="store_true",
                       help="follow the status until Ready is True or False for this generation")
    apply.add_argument("--timeout", metavar="DURATION",
                       help=f"with --wait: how long to wait, e.g. 90s, 30m, 1h30m "
                            f"(default {DEFAULT_TIMEOUT})")
    apply.add_argument("--junit", metavar="FILE", type=Path,
                       help="with --wait: write JUnit XML results of the stages to FILE")
    apply.add_argument("--namespace", "-n", metavar="NAMESPACE",
                       help="namespace (default: metadata.namespace of the file, else the "
                            "context's namespace, else default)")
    apply.add_argument("--kubeconfig", metavar="PATH",
                       help="kubeconfig file (default: KUBECONFIG, else ~/.kube/config)")
    apply.add_argument("--context", metavar="NAME",
                       help="kube context to use (default: the kubeconfig's current context)")
    apply.add_argument("--force-conflicts", action="store_true",
                       help="take over fields that another field manager (kubectl, Argo CD) set")
    apply.set_defaults(func=apply_command)


def parse_duration(text: str) -> float:
    """Return the seconds of a duration such as 90s, 30m, 1h30m or a plain number of seconds."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        match = DURATION_PATTERN.fullmatch(value)
        if not value or match is None:
            raise ValueError(f"--timeout {text!r} is not a duration; use e.g. 90s, 30m or 1h30m")
        hours, minutes, secs = (float(part or 0) for part in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds <= 0:
        raise ValueError(f"--timeout {text!r} must be longer than zero")
    return seconds


def apply_command(args: argparse.Namespace) -> int:
    try:
        return _apply(args)
    except KeyboardInterrupt:
        print("modelconv: interrupted; the ModelConversion stays applied and the operator "
              "goes on with it", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: one line, the stack trace only with --debug
        if args.debug:
            traceback.print_exception(error, file=sys.stderr)
        first_line = (str(error).strip().splitlines() or [""])[0][:300]
        print(f"modelconv: internal error: {type(error).__name__}: {first_line}; {DEBUG_HINT}",
              file=sys.stderr)
        return EXIT_FAILED


def _fail(args: argparse.Namespace, error: Exception, reason: str, message: str,
          exit_code: int) -> int:
    """Print the one line of a failure found before waiting; return its exit code."""
    if args.debug:
        traceback.print_exception(error, file=sys.stderr)
    print(f"modelconv: {reason}: {message}", file=sys.stderr)
    return exit_code


def _apply(args: argparse.Namespace) -> int:
    from ..cluster_client import ClusterError, ConversionClient, connect

    try:
        timeout = parse_duration(args.timeout or DEFAULT_TIMEOUT)
        _check_options(args)
        conversion, document = read_conversion(args.file)
    except ValueError as error:
        return _fail(args, error, "InvalidArgument", str(error), EXIT_BAD_INPUT)
    except ConversionError as error:
        return _fail(args, error, error.reason, error.message, EXIT_BAD_INPUT)

    try:
        target = connect(args.kubeconfig, args.context)
        namespace = choose_namespace(args.namespace, document, target.namespace)
        client = ConversionClient(target)
        stored = client.apply(namespace, applied_document(document, namespace),
                              force=args.force_conflicts)
    except ValueError as error:
        return _fail(args, error, INVALID_SPEC, str(error), EXIT_BAD_INPUT)
    except ClusterError as error:
        return _fail(args, error, error.reason, error.message, error.exit_code)

    metadata = stored["metadata"]
    generation = int(metadata.get("generation") or 1)
    print(f"modelconversion.modelconv.io/{metadata['name']} applied in namespace {namespace} "
          f"(generation {generation}, context {target.context})", flush=True)
    if not args.wait:
        return EXIT_OK
    return _wait(args, client, conversion, stored, timeout)


def _check_options(args: argparse.Namespace) -> None:
    if not args.wait:
        options = [option for option, value in (("--timeout", args.timeout),
                                                ("--junit", args.junit)) if value]
        if options:
            raise ValueError(f"{' and '.join(options)} need --wait")


def read_conversion(path: str):
    """Return the validated ModelConversion and the file's document as written.

    Raise `ConversionError` (InvalidSpec, with the field path) when the file is invalid.
    """
    from ..spec import load_conversion
    from ..spec_yaml import load_all

    conversion = load_conversion(path)
    with open(path, encoding="utf-8") as handle:
        document = next(doc for doc in load_all(handle) if doc is not None)
    return conversion, document


def choose_namespace(flag: Optional[str], document: dict, context_namespace: str) -> str:
    """Return --namespace, else metadata.namespace, else the context's namespace.

    Raise ValueError when --namespace and metadata.namespace name different namespaces.
    """
    written = (document.get("metadata") or {}).get("namespace")
    if flag and written and flag != written:
        raise ValueError(f"metadata.namespace: the file names namespace {written!r} but "
                         f"--namespace is {flag!r}; remove one of them")
    return flag or written or context_namespace


def applied_document(document: dict, namespace: str) -> dict:
    """Return the document to apply: the file's fields, without status and server metadata."""
    metadata = {key: value for key, value in (document.get("metadata") or {}).items()
                if key not in SERVER_METADATA}
    metadata["namespace"] = namespace
    applied = {key: value for key, value in document.items() if key != "status"}
    applied["metadata"] = metadata
    return applied


# --- waiting --------------------------------------------------------------------------------


def _observer():
    from ..progress import LiveProgress, PlainProgress

    return LiveProgress() if sys.stdout.isatty() else PlainProgress(sys.stdout)


def _wait(args: argparse.Namespace, client, conversion, stored: dict, timeout: float) -> int:
    from ..cluster_client import TIMEOUT, ClusterError
    from ..cluster_report import FAILED, READY, StatusRun

    run = StatusRun(conversion, int(stored["metadata"].get("generation") or 1), _observer())
    run.body = stored
    verdict, ending, code = None, None, EXIT_OK
    try:
        verdict = _follow(client, run, stored["metadata"], time.monotonic() + timeout)
    except ClusterError as error:
        if args.debug:
            traceback.print_exception(error, file=sys.stderr)
        ending, code = (error.reason, error.message), error.exit_code
    if verdict is None and ending is None:
        ending = (TIMEOUT, _timeout_message(run, args.timeout or DEFAULT_TIMEOUT))
        code = EXIT_TIMEOUT
    elif verdict == FAILED:
        ending, code = run.failure(), EXIT_FAILED
    return _finish(args, run, ending, code, verdict == READY)


def _follow(client, run, metadata: dict, deadline: float) -> Optional[str]:
    """Feed the resource's versions to `run` until it has a verdict; None at the deadline.

    Raise `ClusterError` (reason Deleted) when the resource is deleted, is being deleted, or
    was replaced by another one of the same name.
    """
    from ..cluster_client import deleted_error, follow

    namespace, name = metadata["namespace"], metadata["name"]
    announced = False
    for body in follow(client, namespace, name, deadline):
        current = body.get("metadata") or {}
        if current.get("uid") != metadata["uid"] or current.get("deletionTimestamp"):
            raise deleted_error(namespace, name)
        verdict = run.update(body)
        if verdict is not None:
            return verdict
        if not run.current(body) and not announced:
            announced = True
            print(f"waiting for the operator to observe generation {run.generation}",
                  flush=True)
    return None


def _timeout_message(run, duration: str) -> str:
    from ..cluster_report import condition_of

    metadata = run.body.get("metadata") or {}
    subject = f"modelconversions.modelconv.io {metadata.get('namespace')}/{metadata.get('name')}"
    follow = (f"`kubectl get modelconversion {metadata.get('name')} "
              f"-n {metadata.get('namespace')} -w`")
    if not run.current(run.body):
        return (f"{subject} was not Ready within {duration}: the operator has not observed "
                f"generation {run.generation}. Check that it runs and watches namespace "
                f"{metadata.get('namespace')}; once it does, it runs the conversion, which "
                f"you can follow with {follow}")
    state = condition_of(run.body, "Ready").get("message") or "no Ready condition yet"
    return (f"{subject} was not Ready within {duration} ({state}); the operator goes on with "
            f"the run: follow it with {follow}")


def _finish(args: argparse.Namespace, run, ending: Optional[tuple[str, str]], code: int,
            ready: bool) -> int:
    """Show the summary, write JUnit, and return the exit code."""
    run.start()
    outcome = run.outcome(None if ready else ending)
    run.observer.run_finished(outcome)
    observed = (run.body.get("status") or {}).get("observedGeneration") or 0
    if ready and observed > run.generation:
        print(f"note: generation {observed}, applied after this one, is the one that became "
              "Ready", flush=True)
    if args.junit:
        run.write_junit(outcome, args.junit)
    return code
