"""`modelconv agent` (a macOS runner) and `modelconv runners` (the pool as a table).

Both import only the Kubernetes client at start; the agent's backend loads coremltools or
torch when it is prepared.
"""

from __future__ import annotations

import argparse
import json
import os
import logging
import signal
import socket
import sys
import tempfile
from pathlib import Path

from ..errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from ..runner.resource import BACKENDS, COREML
from .kube_names import check_namespace

log = logging.getLogger("modelconv.agent")

NAME_PATTERN_HELP = "lowercase letters, digits and '-', at most 63 characters"


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_agent(subparsers)
    _register_runners(subparsers)


def _register_agent(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "agent",
        help="run a macOS runner that claims and runs CoreMLChecks",
        description=(
            "Register in the pool namespace with a Lease, claim CoreMLChecks this runner can "
            "serve, run them and write their results. SIGTERM drains: running checks finish "
            "or are handed back."
        ),
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, $KUBECONFIG "
                        "or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: its current context)")
    parser.add_argument("--namespace", "-n", required=True, help="pool namespace to serve")

    # What the runner offers and how it works.
    parser.add_argument("--labels", default="",
                        help="runner labels, e.g. chip=m2,macos=15; on macOS chip and macos "
                        "are detected when not given")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="checks run at the same time (default 1)")
    parser.add_argument("--backend", choices=BACKENDS, default=COREML,
                        help="coreml (macOS only) or mil-reference (any OS; never verifies a "
                        "device). Default: coreml")
    parser.add_argument("--name", help=f"runner and Lease name ({NAME_PATTERN_HELP}); default: "
                        "the host name")

    # Timing, files and logs.
    parser.add_argument("--lease-seconds", type=int, default=30,
                        help="Lease duration in seconds; renewed every third of it (default 30)")
    parser.add_argument("--drain-seconds", type=float, default=60.0,
                        help="seconds running checks get to finish after SIGTERM (default 60)")
    parser.add_argument("--workdir", help="folder for downloads, created if missing (default: a "
                        "temporary folder)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log line format (default text)")
    parser.set_defaults(func=run_agent)


def _register_runners(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "runners", help="list the runner pool: labels, liveness, checks in flight",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--namespace", "-n", default="modelconv-runners",
                        help="pool namespace (default modelconv-runners)")
    parser.add_argument("--output", choices=("table", "json"), default="table")
    parser.set_defaults(func=list_runners)


# --- agent --------------------------------------------------------------------------------


def run_agent(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from ..cluster_client import ClusterError, connect, unreachable_error
    from ..runner.agent import Agent
    from ..runner.backends import BackendUnavailable, backend_named
    from ..runner.kube import NotFound, describe_api_error
    from ..runner.lease import RunnerNameTaken

    try:
        settings = _agent_settings(args)
    except ValueError as error:
        print(f"modelconv agent: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    backend = backend_named(args.backend)
    try:
        backend.prepare()
    except BackendUnavailable as error:
        print(f"modelconv agent: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        client = connect(args.kubeconfig, args.context).api_client
    except ClusterError as error:
        print(f"modelconv agent: {error.reason}: {error.message}", file=sys.stderr)
        return error.exit_code
    _configure_logging(args.log_format, getattr(args, "debug", False))
    agent = Agent(settings, client, backend)
    _install_signal_handlers(agent)
    try:
        code = agent.run()
        if agent.workers_running():
            # A worker still inside torch would make interpreter shutdown abort (C++
            # "terminate called"), so end the process here; the claims are released.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    except RunnerNameTaken as error:
        print(f"modelconv agent: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ApiException as error:
        print(f"modelconv agent: registering runner {settings.name} in namespace "
              f"{settings.namespace} failed: {describe_api_error(error)}", file=sys.stderr)
        return EXIT_FAILED
    # urllib3 raises HTTPError subclasses when the connection fails (refused, TLS, timeout).
    except HTTPError as error:
        failure = unreachable_error(
            f"serve namespace {settings.namespace} as runner {settings.name}", error)
        print(f"modelconv agent: {failure.reason}: {failure.message}", file=sys.stderr)
        return EXIT_FAILED
    except NotFound:
        print(f"modelconv agent: namespace {settings.namespace} not found: create it, or "
              "check --namespace", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        client.close()


def _agent_settings(args: argparse.Namespace):
    import re

    from ..runner.agent import AgentSettings
    from ..runner.backends.coreml import detected_labels
    from ..runner.pool import parse_labels

    check_namespace("--namespace", args.namespace)
    name = args.name or socket.gethostname().split(".")[0].lower()
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ValueError(f"runner name {name!r} is invalid: use {NAME_PATTERN_HELP} (--name)")
    if not 1 <= args.concurrency <= 64:
        raise ValueError(f"--concurrency {args.concurrency} must be between 1 and 64")
    if not 3 <= args.lease_seconds <= 3600:
        raise ValueError(f"--lease-seconds {args.lease_seconds} must be between 3 and 3600")
    if args.drain_seconds < 0:
        raise ValueError("--drain-seconds must not be negative")
    labels = {**detected_labels(), **parse_labels(args.labels)}
    # One folder per running check is created below it, and removed when the check ends.
    workdir = Path(args.workdir or Path(tempfile.gettempdir()) / f"modelconv-agent-{name}")
    _check_workdir(workdir)
    return AgentSettings(
        name=name, namespace=args.namespace, labels=labels, workdir=workdir,
        concurrency=args.concurrency, lease_seconds=args.lease_seconds,
        drain_seconds=args.drain_seconds,
    )


def _check_workdir(workdir: Path) -> None:
    """Create `workdir` if needed, and raise ValueError unless this user can write there.

    A file is created and removed there as the probe, because permission bits do not tell
    the whole story (root, ACLs, read-only mounts).
    """
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} is not a folder: give a folder for the "
                         "downloads of running checks")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as error:
        raise ValueError(f"--workdir {workdir} cannot be used ({error.strerror or error}): "
                         "give a folder this user can create and write") from None


def _install_signal_handlers(agent) -> None:
    def on_signal(signum, frame) -> None:
        # A second signal means: stop now, hand back whatever is still running.
        immediately = agent.stopping
        log.info("received %s: %s", signal.Signals(signum).name,
                 "releasing running checks now" if immediately else "draining")
        agent.stop(immediately=immediately)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(log_format: str, debug: bool) -> None:
    from ..runner.kube import quiet_client_loggers

    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # Those loggers print presigned URLs at DEBUG, so they stay at INFO even with --debug.
    quiet_client_loggers()


# --- runners ------------------------------------------------------------------------------


def list_runners(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from ..cluster_client import ClusterError, connect, unreachable_error
    from ..runner.pool_view import pool_rows, render_table

    try:
        check_namespace("--namespace", args.namespace)
    except ValueError as error:
        print(f"modelconv runners: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        client = connect(args.kubeconfig, args.context).api_client
    except ClusterError as error:
        print(f"modelconv runners: {error.reason}: {error.message}", file=sys.stderr)
        return error.exit_code
    try:
        rows = pool_rows(client, args.namespace)
    except ApiException as error:
        print(f"modelconv runners: listing namespace {args.namespace} failed: "
              f"{error.status} {error.reason}", file=sys.stderr)
        return EXIT_FAILED
    # urllib3 raises HTTPError subclasses when the connection fails (refused, TLS, timeout).
    except HTTPError as error:
        failure = unreachable_error(f"list the runners in namespace {args.namespace}", error)
        print(f"modelconv runners: {failure.reason}: {failure.message}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    elif rows:
        print(render_table(rows))
    else:
        print(f"no runners in namespace {args.namespace}. The pool namespace is the operator's "
              "--pool-namespace (chart value runners.namespace, default the release "
              "namespace). Pass it with -n.", file=sys.stderr)
    return EXIT_OK
