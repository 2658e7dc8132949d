"""Operator settings: one pydantic ``OperatorSettings`` read from ``TROVE_*`` environment variables.

Built once per process (``load_settings``) and kept on kopf's ``memo`` at start-up. The timers'
intervals are read from the same instance when the handlers are imported, because kopf fixes a
timer's interval when it is registered. Values are kept as the strings the operator parsed
before this model existed where the parse belongs elsewhere: the metrics port goes through the
``--metrics-port`` flag's parser (a bad value is a usage error), the blocked ranges through
``reconciler.blocked_ranges`` at start-up (a malformed entry stops the start).
"""

from __future__ import annotations

import functools

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TROVE_", extra="ignore", frozen=True)

    k8s_namespace: str = Field(
        "", description="Namespace to watch (empty: every namespace); the `-n`/`-A` flags override."
    )
    operator_peering: str = Field(
        "trove-operator",
        description="KopfPeering object shared by replicas (`--peering` overrides; needs "
        "`crds/kopf-peering.yaml`).",
    )
    operator_metrics_port: str = Field(
        "9090",
        description="Port of the Prometheus `/metrics` endpoint; `0` disables it "
        "(`--metrics-port` overrides).",
    )
    operator_metrics_host: str = Field(
        "0.0.0.0", description="Address of the metrics endpoint (`--metrics-host` overrides)."
    )
    operator_idle_check_s: float = Field(
        30.0,
        description="Seconds between idle checks of each namespace (and re-syncs of those not "
        "yet Ready or Suspended).",
    )
    operator_resync_s: float = Field(
        300.0,
        description="Seconds between re-syncs of every namespace, repairing drift no event reports "
        "(such as a deleted NetworkPolicy).",
    )
    operator_pool_check_s: float = Field(
        5.0, description="Seconds between top-ups (and status refreshes) of each warm pool."
    )
    operator_make_room_idle_s: float = Field(
        150.0,
        ge=0,
        description="A namespace whose pod cannot be scheduled (node full) gets the least recently "
        "used namespace idle at least this long suspended (longer than the API's activity flush "
        "plus an exec; 0 turns it off).",
    )
    operator_egress_blocked: str = Field(
        "",
        description="Comma-separated CIDRs `internet` egress never reaches, besides link-local and "
        "loopback (empty: the private ranges). The chart sets the cluster's pod, service and node "
        "ranges.",
    )


@functools.cache
def load_settings() -> OperatorSettings:
    """The process's one instance, read from the environment on first use."""
    return OperatorSettings()
