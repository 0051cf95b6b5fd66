"""Prometheus metrics: HTTP requests, queue depth, jobs by state, job durations.

Each app has its own registry (several apps can live in one process, e.g. in tests). Job
counts are read from the store at scrape time, so every API server reports the shared queue.
Durations are observed when this server first sees a job finished (status, stream, result or
sync run), deduplicated per process.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from superscale.jobs.records import Job
from superscale.jobs.store import JobStore

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)
_SEEN_MAX = 10_000


class _StoreCollector(Collector):
    def __init__(self, job_store: JobStore) -> None:
        self._store = job_store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._store.counts()
        depth = GaugeMetricFamily("superscale_queue_depth", "Jobs waiting to be started.")
        depth.add_metric([], counts.get("IN_QUEUE", 0))
        yield depth
        jobs = GaugeMetricFamily("superscale_jobs", "Jobs in the store by state.", labels=["state"])
        for state in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"):
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs


class Metrics:
    def __init__(self, job_store: JobStore) -> None:
        self.registry = CollectorRegistry()
        self._store_collector = _StoreCollector(job_store)
        self.registry.register(self._store_collector)
        self.http_requests = Counter(
            "superscale_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "superscale_http_request_duration_seconds",
            "Time to the start of the response, by route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "superscale_job_duration_seconds",
            "Submit to finish, by outcome.",
            ["outcome"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "superscale_job_inference_seconds",
            "Inference time of successful jobs.",
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def observe_finished(self, job: Job) -> None:
        if job.state != "COMPLETED" or job.finished_at is None:
            return
        with self._lock:
            if job.id in self._seen:
                return
            self._seen[job.id] = None
            if len(self._seen) > _SEEN_MAX:
                self._seen.popitem(last=False)
        outcome = "ok" if job.error is None else job.error.error_type
        self.job_seconds.labels(outcome).observe(max(0.0, job.finished_at - job.created_at))
        if job.error is None and job.inference_time is not None:
            self.inference_seconds.observe(job.inference_time)

    def render(self) -> bytes:
        """The exposition text. Where several processes serve one port (`serve
        --api-processes`), the supervisor sets PROMETHEUS_MULTIPROC_DIR: the HTTP and job
        metrics are then every process's, summed, whichever process answers the scrape."""
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(self._store_collector)
            return generate_latest(registry)
        return generate_latest(self.registry)


class RequestTimer:
    """One HTTP request's metrics: the time to its response's start, then its count by
    status (500 if no response started). `route` names it by template, read when the response
    starts (routing has set it by then)."""

    def __init__(self, metrics: Metrics, method: str, route: Callable[[], str]) -> None:
        self.metrics = metrics
        self.method = method
        self.route = route
        self.started = time.perf_counter()
        self.status = 500

    def send(self, send: Send) -> Send:
        """`send`, timing the response's start."""

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                seconds = time.perf_counter() - self.started
                self.metrics.http_seconds.labels(self.method, self.route()).observe(seconds)
            await send(message)

        return timed

    def finish(self) -> None:
        self.metrics.http_requests.labels(self.method, self.route(), str(self.status)).inc()


class HttpMetricsMiddleware:
    """Counts requests by route template (not raw path: request ids would explode labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timer = RequestTimer(self.metrics, scope["method"], lambda: _route_of(scope))
        try:
            await self.app(scope, receive, timer.send(send))
        finally:
            timer.finish()


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
