"""The custom resources' specs parsed once, so builders and handlers get typed values."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork

from trove_core.names import NAMESPACE_PATTERN

_QUANTITY = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
_CPU = r"^[0-9]+(\.[0-9]+)?m?$"


class _Model(BaseModel):
    # The CRD's schema already prunes unknown fields; here we only need camelCase aliases.
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")


class Storage(_Model):
    size: str = Field("1Gi", pattern=_QUANTITY)
    storage_class_name: str | None = Field(None, alias="storageClassName", max_length=253)


class ResourceAmounts(_Model):
    cpu: str = Field(pattern=_CPU)
    memory: str = Field(pattern=_QUANTITY)
    # The container's writable layer, logs and its /tmp emptyDir; not the PVC.
    ephemeral_storage: str | None = Field(None, alias="ephemeralStorage", pattern=_QUANTITY)


def _requests() -> ResourceAmounts:
    return ResourceAmounts(cpu="50m", memory="64Mi", ephemeralStorage="64Mi")


def _limits() -> ResourceAmounts:
    return ResourceAmounts(cpu="1", memory="1Gi", ephemeralStorage="1Gi")


class Resources(_Model):
    requests: ResourceAmounts = Field(default_factory=_requests)
    limits: ResourceAmounts = Field(default_factory=_limits)


class SandboxTemplate(_Model):
    """What a sandbox pod and its PVC are made of: shared by namespaces and the warm pool."""

    image: str = Field("trove-sandbox:0.1.0", min_length=1, max_length=512)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", alias="imagePullPolicy"
    )
    storage: Storage = Field(default_factory=lambda: Storage())
    resources: Resources = Field(default_factory=Resources)
    # RLIMIT_NPROC of every command (per uid, and each sandbox pod runs as its own uid).
    max_processes: int = Field(1024, alias="maxProcesses", ge=16, le=1_000_000)


class TroveNamespaceSpec(SandboxTemplate):
    workspace_id: str = Field(alias="workspaceId", pattern=NAMESPACE_PATTERN)
    namespace: str = Field(pattern=NAMESPACE_PATTERN)
    egress: Literal["all", "internet", "none"] = "internet"
    # Ranges refused on top of ``egress`` (E2B's update_network): CIDRs, checked when parsed.
    egress_blocked: tuple[IPvAnyNetwork, ...] = Field((), alias="egressBlocked", max_length=1024)
    # False cuts DNS to the cluster's resolver too (E2B's deny-all: a resolver is a way out).
    egress_dns: bool = Field(True, alias="egressDns")
    suspended: bool = False
    deletion_policy: Literal["Delete", "Retain"] = Field("Delete", alias="deletionPolicy")
    idle_suspend_seconds: int = Field(0, alias="idleSuspendSeconds", ge=0, le=31_536_000)


class TroveWarmPoolSpec(_Model):
    """Pre-made, unassigned sandboxes; a new namespace whose template matches claims one."""

    size: int = Field(0, ge=0, le=500)
    # Below namespace pods, so the scheduler preempts waiting sandboxes when the node is full.
    priority_class_name: str | None = Field(None, alias="priorityClassName", max_length=253)
    template: SandboxTemplate = Field(default_factory=lambda: SandboxTemplate())
