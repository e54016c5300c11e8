"""`modelconv operator` (the Kubernetes operator) and `modelconv crd` (its CRD manifest).

`operator` imports Kopf and the controller only when it runs, and never the ML stack.
Exit codes of `operator`: 0 stopped by a signal, 1 leadership lost or a fatal error,
2 invalid options or an unusable Lease namespace (403 or 404 on the Lease). Both causes of
code 2 need a change of the deployment, so a restart would not help.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import Optional

from ..errors import EXIT_BAD_INPUT
from .kube_names import check_namespace, check_object_name

CRD_KINDS = ("modelconversion", "coremlcheck", "all")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _default_lease_namespace() -> str:
    # The operator's own namespace: POD_NAMESPACE from the downward API, else the
    # ServiceAccount's namespace file, else "default".
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def register(subparsers) -> None:
    operator = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator that reconciles ModelConversions",
        description=(
            "Watch ModelConversion resources and run each pipeline stage as a Job. Replicas"
            " elect a leader through a Lease; only the leader reconciles. Exit codes: 0"
            " stopped by SIGTERM or SIGINT, 1 leadership lost or a fatal error, 2 invalid"
            " options, or the Lease namespace is missing or forbidden (403 or 404 on the"
            " Lease), or the leader may not list the resources it watches."
        ),
    )
    _add_cluster_options(operator)
    _add_job_options(operator)
    _add_process_options(operator)
    operator.set_defaults(func=operator_command)

    crd = subparsers.add_parser(
        "crd",
        help="print the ModelConversion or CoreMLCheck CustomResourceDefinition",
        description=(
            "Print a CustomResourceDefinition generated from the models, as in crds/:"
            " modelconv crd | kubectl apply -f -"
        ),
    )
    crd.add_argument("--kind", choices=CRD_KINDS, default="modelconversion",
                     help="modelconversion (crds/modelconversion.yaml), coremlcheck "
                          "(crds/coremlcheck.yaml, the runner pool's checks) or all, as one "
                          "multi-document stream (default: %(default)s)")
    crd.set_defaults(func=crd_command)


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster")
    group.add_argument("--kubeconfig", metavar="FILE",
                       help="kubeconfig to use (default: in-cluster ServiceAccount, else "
                            "KUBECONFIG)")
    group.add_argument("--namespace", dest="namespaces", action="append", default=[],
                       metavar="NAMESPACE",
                       help="watch this namespace (repeatable; default: all namespaces)")
    group.add_argument("--lease-name", default="modelconv-operator",
                       help="name of the leader election Lease (default: %(default)s)")
    group.add_argument("--lease-namespace", default=None,
                       help="namespace of the Lease (default: POD_NAMESPACE, else the "
                            "ServiceAccount's namespace, else default)")
    group.add_argument("--lease-duration", type=float, default=15.0, metavar="SECONDS",
                       help="seconds a Lease stays valid without renewal (default: %(default)s)")
    group.add_argument("--renew-deadline", type=float, default=10.0, metavar="SECONDS",
                       help="seconds the leader keeps trying to renew before it stops "
                            "(default: %(default)s)")
    group.add_argument("--retry-period", type=float, default=2.0, metavar="SECONDS",
                       help="seconds between Lease renewals and acquisition attempts "
                            "(default: %(default)s)")
    group.add_argument("--pool-namespace", default=None, metavar="NAMESPACE",
                       help="namespace of the macOS runner pool, where the device stage creates "
                            "CoreMLChecks (default: the Lease namespace)")
    group.add_argument("--identity", default=None,
                       help="this replica's name in the Lease (default: HOSTNAME and a random "
                            "suffix)")


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("stage Jobs")
    group.add_argument("--stage-image", default=None, metavar="IMAGE",
                       help="image of the export, convert, validate and publish Jobs "
                            "(default: modelconv/modelconv-stage:<version>)")
    group.add_argument("--stage-command", default="modelconv", metavar="COMMAND",
                       help="command of the stage containers, split like a shell line; "
                            "`stage NAME --run FILE` follows (default: %(default)s)")
    group.add_argument("--store", default=None, metavar="s3://BUCKET/PREFIX",
                       help="stage cache and release store when spec.publish.store is unset")
    group.add_argument("--store-secret", default=None, metavar="NAME",
                       help="Secret in each conversion's namespace whose keys (e.g. "
                            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) become stage environment")
    group.add_argument("--s3-endpoint", default=None, metavar="URL",
                       help="S3-compatible endpoint for the stages and the operator")
    group.add_argument("--presign-endpoint", default=None, metavar="URL",
                       help="S3 endpoint in the presigned URLs that macOS runners fetch, when "
                            "they reach the store at another address than the operator "
                            "(default: the operator's own endpoint)")
    group.add_argument("--stage-service-account", default=None, metavar="NAME",
                       help="ServiceAccount of the stage and training pods; it must exist in "
                            "each conversion's namespace (default: the namespace's default "
                            "ServiceAccount). The pods mount no token either way")
    group.add_argument("--stage-env", action="append", default=[], metavar="NAME=VALUE",
                       help="extra environment variable of every stage container (repeatable; "
                            "never a secret)")
    group.add_argument("--backoff-limit", type=int, default=2, metavar="N",
                       help="pod retries of a stage after transient failures "
                            "(default: %(default)s)")
    group.add_argument("--active-deadline", type=int, default=3600, metavar="SECONDS",
                       help="seconds a stage Job may run (default: %(default)s)")
    group.add_argument("--train-deadline", type=int, default=86400, metavar="SECONDS",
                       help="seconds a training Job may run (default: %(default)s)")
    group.add_argument("--ttl-after-finished", type=int, default=3600, metavar="SECONDS",
                       help="seconds a finished Job is kept before Kubernetes deletes it "
                            "(default: %(default)s)")
    group.add_argument("--recheck-interval", type=float, default=30.0, metavar="SECONDS",
                       help="seconds between periodic re-checks of each conversion "
                            "(default: %(default)s)")
    group.add_argument("--device-poll-interval", type=float, default=5.0, metavar="SECONDS",
                       help="seconds between reads of a running device check "
                            "(default: %(default)s)")
    group.add_argument("--image-pull-grace", type=float, default=120.0, metavar="SECONDS",
                       help="seconds a pod may fail to pull its image or to create its "
                            "container, and a stage Job may have no pod, before the stage "
                            "fails; at least 5 (default: %(default)s)")


def _add_process_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("process")
    group.add_argument("--metrics-port", type=_port_number, default=9090, metavar="PORT",
                       help="port of the Prometheus /metrics endpoint, 0 to turn it off "
                            "(default: %(default)s)")
    group.add_argument("--metrics-address", default="0.0.0.0", metavar="ADDRESS",
                       help="address the metrics endpoint listens on (default: %(default)s)")
    group.add_argument("--health-port", type=_port_number, default=8080, metavar="PORT",
                       help="port of the /healthz endpoint, 0 to turn it off "
                            "(default: %(default)s)")
    group.add_argument("--health-address", default="0.0.0.0", metavar="ADDRESS",
                       help="address the health endpoint listens on (default: %(default)s)")
    group.add_argument("--log-format", choices=("json", "text"), default="json",
                       help="log line format (default: %(default)s)")
    group.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                       default="info", help="log level (default: %(default)s)")


def _port_number(text: str) -> int:
    """Parse a TCP port option from 0 to 65535, or raise argparse.ArgumentTypeError."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"invalid port {text!r}: expected a whole number from 0 to 65535 (0 turns the "
            "endpoint off)")
    return port


def _stage_env(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    from ..controller.jobs import OPERATOR_STAGE_ENV

    env = []
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise ValueError(f"--stage-env {pair!r}: expected NAME=VALUE")
        if name in OPERATOR_STAGE_ENV:
            raise ValueError(
                f"--stage-env {name}: the operator sets {name} on stage Jobs itself, and its"
                " value would win. Set the S3 endpoint with --s3-endpoint."
            )
        env.append((name, value))
    return tuple(env)


def _endpoint_option(option: str, url: Optional[str]) -> Optional[str]:
    """Return an S3 endpoint URL option, checked as the store checks MODELCONV_S3_ENDPOINT.

    Raise ValueError when the URL is not http(s) with a host, or has credentials, a query or
    a fragment.
    """
    from ..store import endpoint_url_problem, redact_url

    if url is None:
        return None
    problem = endpoint_url_problem(url)
    if problem:
        raise ValueError(f"{option} {redact_url(url)!r} {problem}")
    return url


def _store_option(url: Optional[str]) -> Optional[str]:
    """Return the --store URL, or raise ValueError when the store's own parsing rejects it."""
    from ..errors import ConversionError
    from ..store import check_store_url

    if url is None:
        return None
    try:
        check_store_url(url)
    except ConversionError as error:
        raise ValueError(f"--store: {error.message}") from None
    return url


def _optional_name(check, option: str, name: Optional[str]) -> Optional[str]:
    """Return None for an option that was not given, else `check(option, name)`."""
    return None if name is None else check(option, name)


def _not_blank(option: str, value: Optional[str]) -> Optional[str]:
    """Return `value` unless it was given as an empty or whitespace-only string."""
    if value is not None and not value.strip():
        raise ValueError(f"{option} must not be empty: give a value or leave the option out")
    return value


def _stage_image(image: Optional[str]) -> Optional[str]:
    _not_blank("--stage-image", image)
    if image is not None and any(character.isspace() for character in image):
        raise ValueError(f"--stage-image {image!r} contains whitespace: give an image "
                         "reference such as registry.example.com/modelconv-stage:1.0")
    return image


def _stage_command(text: str) -> tuple[str, ...]:
    try:
        command = tuple(shlex.split(text))
    except ValueError as error:  # an unclosed quote or a trailing backslash
        raise ValueError(f"--stage-command {text!r} is not a valid shell line ({error}): "
                         "close the quotes, or escape a literal quote with a backslash") from None
    if not command:
        raise ValueError("--stage-command must not be empty")
    return command


def operator_config(args: argparse.Namespace):
    """Return the OperatorConfig for parsed `operator` options; raise ValueError if invalid."""
    from ..controller.config import DEFAULT_STAGE_IMAGE, OperatorConfig

    for option, value, minimum in (
        ("--backoff-limit", args.backoff_limit, 0),
        ("--active-deadline", args.active_deadline, 1),
        ("--train-deadline", args.train_deadline, 1),
        ("--ttl-after-finished", args.ttl_after_finished, 0),
        ("--recheck-interval", args.recheck_interval, 1),
        ("--device-poll-interval", args.device_poll_interval, 1),
        # The Job controller needs a moment to create a Job's pod.
        ("--image-pull-grace", args.image_pull_grace, 5),
    ):
        if value < minimum:
            raise ValueError(f"{option} {value}: expected at least {minimum}")
    if not 0 < args.retry_period < args.renew_deadline < args.lease_duration:
        raise ValueError("expected 0 < --retry-period < --renew-deadline < --lease-duration")
    for namespace in args.namespaces:
        check_namespace("--namespace", namespace)
    check_object_name("--lease-name", args.lease_name)
    _optional_name(check_namespace, "--pool-namespace", args.pool_namespace)
    _not_blank("--identity", args.identity)
    lease_namespace = _optional_name(check_namespace, "--lease-namespace", args.lease_namespace)
    lease_namespace = lease_namespace or _default_lease_namespace()
    return OperatorConfig(
        stage_image=_stage_image(args.stage_image) or DEFAULT_STAGE_IMAGE,
        stage_command=_stage_command(args.stage_command),
        store=_store_option(args.store),
        store_secret=_optional_name(check_object_name, "--store-secret", args.store_secret),
        s3_endpoint=_endpoint_option("--s3-endpoint", args.s3_endpoint),
        presign_endpoint=_endpoint_option("--presign-endpoint", args.presign_endpoint),
        stage_env=_stage_env(args.stage_env),
        stage_service_account=_optional_name(check_object_name, "--stage-service-account",
                                             args.stage_service_account),
        namespaces=tuple(args.namespaces),
        backoff_limit=args.backoff_limit,
        active_deadline_seconds=args.active_deadline,
        train_deadline_seconds=args.train_deadline,
        ttl_seconds_after_finished=args.ttl_after_finished,
        recheck_interval=args.recheck_interval,
        device_poll_interval=args.device_poll_interval,
        image_pull_grace_seconds=args.image_pull_grace,
        lease_name=args.lease_name,
        lease_namespace=lease_namespace,
        pool_namespace=args.pool_namespace or lease_namespace,
        lease_duration_seconds=args.lease_duration,
        renew_deadline_seconds=args.renew_deadline,
        retry_period_seconds=args.retry_period,
    )


def operator_command(args: argparse.Namespace) -> int:
    from ..controller.runtime import ProcessOptions, configure_logging, run_operator

    try:
        config = operator_config(args)
    except ValueError as error:
        print(f"modelconv operator: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.s3_endpoint:
        # The operator reads stage results itself, from the same endpoint as the stages.
        os.environ["MODELCONV_S3_ENDPOINT"] = args.s3_endpoint
    options = ProcessOptions(
        kubeconfig=args.kubeconfig,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        health_port=args.health_port,
        health_address=args.health_address,
        identity=args.identity or "",
        log_format=args.log_format,
        log_level="debug" if args.debug else args.log_level,
    )
    configure_logging(options.log_format, options.log_level)
    return asyncio.run(run_operator(config, options))


def crd_command(args: argparse.Namespace) -> int:
    from ..crd import render_crd
    from ..runner.crd import render_crd as render_check_crd

    kind = getattr(args, "kind", "modelconversion")
    texts = {"modelconversion": [render_crd()], "coremlcheck": [render_check_crd()],
             "all": [render_crd(), render_check_crd()]}[kind]
    sys.stdout.write("---\n".join(texts))
    return 0
