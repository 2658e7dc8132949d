"""Dashboard: the overview (counts, exec rate and latency, error rate) drawn as small charts from
the server's own Prometheus collectors and the event log. Admin sign-ins only; a workspace key
lands on its namespaces."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import APIRouter
from fastapi.responses import Response

from trove_api.metrics import Metrics
from trove_api.routers.dashboard.common import DashboardRoute, ViewDep, back

router = APIRouter(prefix="/dashboard", route_class=DashboardRoute, include_in_schema=False)


@dataclass
class MetricSummary:
    """Since this process started (the collectors are per process)."""

    exec_outcomes: list[tuple[str, float]] = field(default_factory=list)
    exec_latency: list[tuple[str, float]] = field(default_factory=list)  # count per bucket
    requests: float = 0
    client_errors: float = 0
    server_errors: float = 0

    @property
    def error_rate(self) -> float:
        return (self.server_errors / self.requests) if self.requests else 0.0


def summarize(metrics: Metrics) -> MetricSummary:
    summary = MetricSummary()
    previous = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "trove_execs_total":
                summary.exec_outcomes.append((sample.labels["outcome"], sample.value))
            elif sample.name == "trove_exec_duration_seconds_bucket":
                # Cumulative buckets → how many fell into each one.
                bound = sample.labels["le"]
                shown = "> 60 s" if bound == "+Inf" else f"≤ {float(bound) * 1000:g} ms"
                summary.exec_latency.append((shown, sample.value - previous))
                previous = sample.value
            elif sample.name == "trove_http_requests_total":
                summary.requests += sample.value
                status = sample.labels.get("status", "")
                if status.startswith("4"):
                    summary.client_errors += sample.value
                elif status.startswith("5"):
                    summary.server_errors += sample.value
    return summary


@router.get("")
async def overview(view: ViewDep) -> Response:
    if not view.caller.is_admin:
        return back("/dashboard/namespaces")
    counts = await view.ctx.catalog.overview(view.caller.workspace_id)
    return view.page("overview.html", nav="overview", counts=counts, metrics=summarize(view.ctx.metrics))
