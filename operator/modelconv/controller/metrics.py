"""Prometheus metrics of the operator, served on `--metrics-port` at /metrics."""

from __future__ import annotations

from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Stage durations range from seconds (publish, cache hits) to hours (training).
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class OperatorMetrics:
    """The operator's metrics, in a registry of their own."""

    def __init__(self, registry: Optional[CollectorRegistry] = None):
        self.registry = registry or CollectorRegistry()
        self.conversions = Counter(
            "modelconv_conversions_total",
            "Conversions that finished, by outcome (succeeded or failed).",
            ["outcome"], registry=self.registry)
        self.stage_duration = Histogram(
            "modelconv_stage_duration_seconds",
            "Seconds from a stage Job's creation to its end, by stage and outcome.",
            ["stage", "outcome"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.jobs_running = Gauge(
            "modelconv_jobs_running", "Stage Jobs that are running now.", registry=self.registry)
        self.retries = Counter(
            "modelconv_stage_retries_total",
            "Pods a stage Job started again after a transient failure, by stage.",
            ["stage"], registry=self.registry)
        self.cache_hits = Counter(
            "modelconv_stage_cache_hits_total",
            "Stages whose result came from the store cache without a Job, by stage.",
            ["stage"], registry=self.registry)
        self.api_writes = Counter(
            "modelconv_api_writes_total",
            "Requests of the operator's own client that change objects, by HTTP verb "
            "(Kopf's event posts and finalizer patches are not included).",
            ["verb"], registry=self.registry)

    def count_running_jobs(self, count: Callable[[], int]) -> None:
        self.jobs_running.set_function(count)

    def serve(self, port: int, address: str) -> None:
        """Serve /metrics from a background thread."""
        start_http_server(port, addr=address, registry=self.registry)
