"""Prometheus collectors for the API, on a registry of the app's own (several apps per test run)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "trove_http_requests",
            "HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "trove_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.execs = Counter(
            "trove_execs",
            "Commands run, by outcome (ok, nonzero, timeout).",
            ["outcome"],
            registry=self.registry,
        )
        self.exec_latency = Histogram(
            "trove_exec_duration_seconds",
            "Wall-clock time of commands inside the sandbox.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
