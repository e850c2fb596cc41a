"""Prometheus metrics for one server (its own registry: no global state)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..ipc import BatchReport

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "inferserve_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=r
        )
        self.request_latency = Histogram(
            "inferserve_request_duration_seconds", "Time from request to response, by route",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_wait = Histogram(
            "inferserve_queue_wait_seconds", "Time a request waited in the worker before its first batch ran",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.compute = Histogram(
            "inferserve_batch_compute_seconds", "Model time of one batch", buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "inferserve_batch_size", "Inputs per model batch", buckets=_BATCH_BUCKETS, registry=r,
        )
        self.padded_tokens = Histogram(
            "inferserve_batch_padded_tokens", "Padded tokens (inputs x longest) per model batch",
            buckets=_TOKEN_BUCKETS, registry=r,
        )
        self.items_computed = Counter(
            "inferserve_items_computed", "Inputs that went through the model", registry=r,
        )
        self.worker_restarts = Counter(
            "inferserve_worker_restarts", "Worker processes restarted after dying", registry=r,
        )
        self.worker_answers = Counter(
            "inferserve_worker_answers", "Requests answered, by worker index", ["worker"], registry=r,
        )
        self.retries = Counter(
            "inferserve_request_retries", "Requests retried on another worker after theirs died", registry=r,
        )
        self.in_flight = Gauge(
            "inferserve_in_flight_requests", "HTTP requests being handled now", registry=r,
        )
        self.queue_depth = Gauge(
            "inferserve_queue_depth", "Requests sent to the worker and not answered yet", registry=r,
        )
        self.worker_up = Gauge(
            "inferserve_worker_up", "1 while the worker has the model loaded and accepts work", registry=r,
        )

        # labels() validates and locks on every call; the children are few
        # (routes x statuses), so each is looked up once.
        self._request_children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._answer_children: dict[int, Any] = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        children = self._request_children.get((route, status))
        if children is None:
            children = (self.requests.labels(route=route, status=str(status)),
                        self.request_latency.labels(route=route))
            self._request_children[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def track_backend(self, queue_depth: Callable[[], float], worker_up: Callable[[], float]) -> None:
        """Read these gauges from the backend at scrape time."""
        self.queue_depth.set_function(queue_depth)
        self.worker_up.set_function(worker_up)

    def observe_answer(self, worker: int) -> None:
        child = self._answer_children.get(worker)
        if child is None:
            child = self._answer_children[worker] = self.worker_answers.labels(worker=str(worker))
        child.inc()

    def observe_batch(self, report: BatchReport) -> None:
        self.batch_size.observe(report.size)
        self.padded_tokens.observe(report.padded_tokens)
        self.items_computed.inc(report.size)
        self.compute.observe(report.compute_ms / 1000.0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
