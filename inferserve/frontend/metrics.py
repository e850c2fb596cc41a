"""Prometheus metrics for one server (its own registry: no global state).

Series about a model's work carry a ``model`` label (its served name):
requests and their latency, queue wait, batches, queue depth, workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

from ..ipc import BatchReport

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class _ModelSeries:
    """One model's children of the labelled metrics: labels() validates and
    locks on every call, so each is looked up once."""

    queue_wait: Any
    compute: Any
    batch_size: Any
    padded_tokens: Any
    tokens_real: Any
    tokens_padded: Any
    items_computed: Any
    restarts: Any
    retries: Any
    answers: dict[int, Any] = field(default_factory=dict)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "inferserve_requests", "HTTP requests answered, by route, status and model",
            ["route", "status", "model"], registry=r
        )
        self.request_latency = Histogram(
            "inferserve_request_duration_seconds", "Time from request to response, by route and model",
            ["route", "model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.queue_wait = Histogram(
            "inferserve_queue_wait_seconds", "Time a request waited in the worker before its first batch ran",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.compute = Histogram(
            "inferserve_batch_compute_seconds", "Model time of one batch", ["model"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "inferserve_batch_size", "Inputs per model batch", ["model"], buckets=_BATCH_BUCKETS, registry=r,
        )
        self.padded_tokens = Histogram(
            "inferserve_batch_padded_tokens", "Padded tokens (inputs x longest) per model batch",
            ["model"], buckets=_TOKEN_BUCKETS, registry=r,
        )
        # Padding efficiency: rate(inferserve_tokens_real) / rate(inferserve_tokens_padded).
        self.tokens_real = Counter(
            "inferserve_tokens_real", "The inputs' own tokens computed (padding excluded)", ["model"], registry=r,
        )
        self.tokens_padded = Counter(
            "inferserve_tokens_padded", "Tokens computed once padded (inputs x longest, per batch)", ["model"],
            registry=r,
        )
        self.items_computed = Counter(
            "inferserve_items_computed", "Inputs that went through the model", ["model"], registry=r,
        )
        self.worker_restarts = Counter(
            "inferserve_worker_restarts", "Worker processes restarted after dying", ["model"], registry=r,
        )
        self.worker_answers = Counter(
            "inferserve_worker_answers", "Requests answered, by model and worker index", ["model", "worker"], registry=r,
        )
        self.retries = Counter(
            "inferserve_request_retries", "Requests retried on another worker, or the replacement, after theirs died", ["model"],
            registry=r,
        )
        self.in_flight = Gauge(
            "inferserve_in_flight_requests", "HTTP requests being handled now", registry=r,
        )
        self.queue_depth = Gauge(
            "inferserve_queue_depth", "Requests sent to the model's workers and not answered yet", ["model"],
            registry=r,
        )
        self.worker_up = Gauge(
            "inferserve_worker_up", "1 while a worker has the model loaded and accepts work", ["model"],
            registry=r,
        )

        # labels() validates and locks on every call; the children are few
        # (routes x statuses x models), so each is looked up once.
        self._request_children: dict[tuple[str, int, str], tuple[Any, Any]] = {}
        self._models: dict[str, _ModelSeries] = {}

    def observe_request(self, route: str, status: int, seconds: float, model: str = "") -> None:
        """``model``: the model that answered ("" for routes of no model)."""
        children = self._request_children.get((route, status, model))
        if children is None:
            children = (self.requests.labels(route=route, status=str(status), model=model),
                        self.request_latency.labels(route=route, model=model))
            self._request_children[(route, status, model)] = children
        children[0].inc()
        children[1].observe(seconds)

    def track_model(self, model: str, queue_depth: Callable[[], float], worker_up: Callable[[], float]) -> None:
        """A model's series (at 0 until it works); its gauges read its backend at scrape time."""
        self.queue_depth.labels(model=model).set_function(queue_depth)
        self.worker_up.labels(model=model).set_function(worker_up)
        self._models[model] = _ModelSeries(
            queue_wait=self.queue_wait.labels(model=model),
            compute=self.compute.labels(model=model),
            batch_size=self.batch_size.labels(model=model),
            padded_tokens=self.padded_tokens.labels(model=model),
            tokens_real=self.tokens_real.labels(model=model),
            tokens_padded=self.tokens_padded.labels(model=model),
            items_computed=self.items_computed.labels(model=model),
            restarts=self.worker_restarts.labels(model=model),
            retries=self.retries.labels(model=model),
        )

    def observe_queue_wait(self, model: str, seconds: float) -> None:
        self._models[model].queue_wait.observe(seconds)

    def observe_answer(self, worker: int, model: str) -> None:
        series = self._models[model]
        child = series.answers.get(worker)
        if child is None:
            child = series.answers[worker] = self.worker_answers.labels(model=model, worker=str(worker))
        child.inc()

    def observe_batch(self, report: BatchReport, model: str) -> None:
        series = self._models[model]
        series.batch_size.observe(report.size)
        series.padded_tokens.observe(report.padded_tokens)
        series.tokens_real.inc(report.tokens)
        series.tokens_padded.inc(report.padded_tokens)
        series.items_computed.inc(report.size)
        series.compute.observe(report.compute_ms / 1000.0)

    def observe_restart(self, model: str) -> None:
        self._models[model].restarts.inc()

    def observe_retry(self, model: str) -> None:
        self._models[model].retries.inc()

    def exposition(self) -> bytes:
        """The text format, without the ``_created`` twin prometheus-client
        adds to every counter and histogram (a start time per series: twice
        the lines, read by no dashboard). Dropped here rather than by its
        process-wide switch, so each app's registry stays its own."""
        return generate_latest(_WithoutCreated(self.registry))


class _WithoutCreated:
    """A registry's metrics as it collects them, less their ``_created`` samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric
