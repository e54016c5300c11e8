"""The operator process: health and metrics endpoints, leader election, then Kopf.

Every replica serves /healthz and /metrics and competes for the Lease, and only the leader
runs Kopf. A leader that cannot renew its Lease stops Kopf and exits with code 1, so that
its restart comes back as a standby. On SIGTERM or SIGINT it stops Kopf, releases the Lease
and exits with 0. A Lease namespace it cannot use (403 or 404), or a watched resource it may
not list, ends with one log line each and code 2, since only a change of its options or
rights helps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import uuid
from typing import Optional

import kopf
from aiohttp import web

from .config import OperatorConfig
from .handlers import build_registry, operator_settings
from ..crd import PLURAL, VERSION
from ..errors import EXIT_BAD_INPUT
from ..spec import API_GROUP
from .kube import ApiError, KubeClient, login
from .leader import LeaderElector
from .metrics import OperatorMetrics
from .reconcile import Controller
from .results import ResultReader
from .summary import Event

log = logging.getLogger(__name__)

# Seconds Kopf gets to finish its handlers after a stop request.
STOP_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class ProcessOptions:
    """Settings of the process rather than of the reconciliation."""

    kubeconfig: Optional[str] = None
    metrics_port: int = 9090
    metrics_address: str = "0.0.0.0"
    health_port: int = 8080
    health_address: str = "0.0.0.0"
    identity: str = ""
    log_format: str = "json"
    log_level: str = "info"


def default_identity() -> str:
    """Return this replica's name in the Lease.

    In a pod it is the pod name (HOSTNAME), so a restarted container takes its own Lease back
    at once. Elsewhere several processes may share a host name, so a random suffix is added.
    """
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.environ.get("HOSTNAME"):
        return os.environ["HOSTNAME"]
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def configure_logging(log_format: str, level: str) -> None:
    """Set up logging through Kopf's formatters, so every line can name its object."""
    kopf.configure(log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL)
    logging.getLogger().setLevel(level.upper())
    # The access log of the health and metrics endpoints would be one line per probe.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Kopf logs every handler call at INFO; the operator's own INFO lines are the state
    # changes, so Kopf's object messages show from WARNING up unless debugging.
    if level.lower() != "debug":
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)


def post_event(body: dict, event: Event) -> None:
    """Queue a Kubernetes Event about `body` through Kopf's event poster."""
    poster = kopf.warn if event.type == "Warning" else kopf.info
    poster(body, reason=event.reason, message=event.message)


async def serve_health(address: str, port: int) -> web.AppRunner:
    """Serve GET /healthz (200 while the event loop runs), for liveness and readiness probes."""
    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, address, port).start()
    return runner


def _lease_failure(config: OperatorConfig, error: Exception) -> int:
    """Log why the leader election Lease could not be read or written; return the exit code."""
    lease = f"{config.lease_namespace}/{config.lease_name}"
    if isinstance(error, ApiError) and error.status in (403, 404):
        hint = ("create the namespace or choose another with --lease-namespace"
                if error.not_found else
                "grant the operator's ServiceAccount the leader election rules "
                "(docs/operator.md lists them; the chart creates them)")
        log.error("cannot take the Lease %s: %s; %s", lease, error, hint)
        return EXIT_BAD_INPUT
    log.error("cannot take the Lease %s: %s; check --kubeconfig and that the API server is "
              "reachable", lease, error)
    return 1


# The resources Kopf watches (see handlers.build_registry), by the API path of their kind.
WATCHED = ((f"/apis/{API_GROUP}/{VERSION}", PLURAL), ("/apis/batch/v1", "jobs"),
           ("/api/v1", "pods"))


async def missing_watch_rights(kube: KubeClient, config: OperatorConfig) -> list[str]:
    """Return a line for each watched resource that the operator cannot list.

    Kopf retries a watch that fails with 403 or 404 forever, logging a stack trace each
    time, so the leader checks once before it starts Kopf.
    """
    scopes = [(f"namespaces/{namespace}/", f"namespace {namespace}")
              for namespace in config.namespaces] or [("", "all namespaces")]
    problems = []
    for base, plural in WATCHED:
        for scope, where in scopes:
            try:
                await kube.get(f"{base}/{scope}{plural}", limit=1)
            except ApiError as error:
                if error.not_found and plural == PLURAL:
                    problems.append("the API server does not serve ModelConversions: apply "
                                    "crds/modelconversion.yaml (the chart installs it)")
                    break
                if error.status != 403:
                    raise
                problems.append(
                    f"the operator may not list {plural} in {where} (403): grant its "
                    "ServiceAccount the rules in docs/operator.md (the chart's ClusterRole "
                    "has them), or watch only namespaces where it has them with --namespace")
    return problems


async def run_operator(config: OperatorConfig, options: ProcessOptions) -> int:
    """Run until stopped; return the process exit code."""
    kube = KubeClient(lambda: login(options.kubeconfig))
    metrics = OperatorMetrics()
    kube.on_write = lambda verb: metrics.api_writes.labels(verb).inc()
    try:
        if options.metrics_port:
            metrics.serve(options.metrics_port, options.metrics_address)
        health = await serve_health(options.health_address, options.health_port) \
            if options.health_port else None
    except OSError as error:
        log.error("cannot listen for the metrics (%s:%d) or health (%s:%d) endpoint: %s; "
                  "choose other ports with --metrics-port and --health-port",
                  options.metrics_address, options.metrics_port, options.health_address,
                  options.health_port, error)
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    elector = LeaderElector(
        kube, config.lease_namespace, config.lease_name, options.identity or default_identity(),
        lease_duration=config.lease_duration_seconds,
        renew_deadline=config.renew_deadline_seconds,
        retry_period=config.retry_period_seconds,
    )
    try:
        try:
            if not await elector.acquire(stop):
                return 0
        except (ApiError, OSError) as error:
            return _lease_failure(config, error)
        problems = await missing_watch_rights(kube, config)
        if problems:
            for problem in problems:
                log.error("%s", problem)
            await elector.release()
            return EXIT_BAD_INPUT
        controller = Controller(config, kube, ResultReader(), metrics, post_event)
        code = await _lead(controller, config, elector, stop, options)
        if code == 0:
            await elector.release()
        return code
    finally:
        await kube.close()
        if health is not None:
            await health.cleanup()


async def _lead(controller: Controller, config: OperatorConfig, elector: LeaderElector,
                stop: asyncio.Event, options: ProcessOptions) -> int:
    """Run Kopf while this process holds the Lease; return the exit code."""
    kopf_stop = asyncio.Event()

    @kopf.on.login(registry=(registry := build_registry(controller, config)))
    def login_handler(**_: object) -> kopf.ConnectionInfo:
        return login(options.kubeconfig)

    operator = asyncio.create_task(kopf.operator(
        registry=registry,
        settings=operator_settings(config),
        standalone=True,
        clusterwide=not config.namespaces,
        namespaces=list(config.namespaces),
        stop_flag=kopf_stop,
    ), name="kopf")
    keeper = asyncio.create_task(elector.keep(), name="lease")
    stopped = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait({operator, keeper, stopped}, return_when=asyncio.FIRST_COMPLETED)

    code = 0
    if keeper in done:
        # Renewals failed for longer than the renew deadline, or the Lease API failed.
        log.error("%s; stopping", keeper.exception())
        code = 1
    elif operator in done and not operator.cancelled() and operator.exception() is not None:
        log.error("the Kopf operator stopped: %s", operator.exception())
        code = 1
    kopf_stop.set()
    for task in (keeper, stopped):
        task.cancel()
    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(operator, timeout=STOP_TIMEOUT)
    return code
