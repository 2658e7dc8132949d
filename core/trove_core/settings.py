"""Server settings: one pydantic ``Settings`` read from flat ``TROVE_*`` environment variables.

No field may reuse a name the official client reads (``TROVE_API_KEY``, ``TROVE_BASE_URL``,
``TROVE_NAMESPACE``, ``TROVE_WORKSPACE_ID``, ``TROVE_WEBHOOK_SECRET``), so a shell that holds
both never confuses them. Build it once at the edge (``load_settings``) and pass it in.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, computed_field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trove_core.wire import MIB

CLIENT_ENV_NAMES = frozenset({"api_key", "base_url", "namespace", "workspace_id", "webhook_secret"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TROVE_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port the API listens on.")
    data_dir: Path = Field(
        Path(".trove"),
        description="Data directory: database, namespace directories, first-run keys.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the metadata database (default: SQLite in the data dir).",
    )
    runtime: Literal["local", "kubernetes"] = Field(
        "local", description="Backend that runs commands and stores files."
    )
    sandbox: Literal["bwrap", "none"] = Field(
        "bwrap",
        description="Local runtime sandbox. `none` runs commands unsandboxed (development only).",
    )
    sandbox_network: Literal["outbound", "off"] = Field(
        "outbound",
        description="Sandbox network: `outbound` (own network namespace with NAT to the internet; "
        "host loopback, link-local and private ranges refused) or `off` (loopback only). "
        "`on` is read as `outbound`.",
    )
    sandbox_network_allow: str = Field(
        "",
        description="Comma-separated IPv4 CIDRs that `outbound` sandboxes may reach although they "
        "are private or link-local (e.g. an internal package mirror). The host's own addresses "
        "and loopback stay refused.",
    )
    sandbox_seccomp: Literal["on", "off"] = Field(
        "on",
        description="Syscall filter (Docker's default rules) on local sandboxes; `on` refuses to "
        "start without libseccomp. `off` runs without a filter.",
    )
    sandbox_idle_s: float = Field(
        300.0,
        gt=0,
        description="Stop a namespace's warm local sandbox (its agent and everything in it) after "
        "this long without calls; the next call starts it again.",
    )
    sandbox_max_warm: int = Field(
        100,
        ge=1,
        description=(
            "Warm local sandboxes at once; beyond it the least recently used idle one stops "
            "(besides two spares started ahead for the next new namespaces, and at most two "
            "in new namespaces not called yet)."
        ),
    )
    sandbox_uid_base: int = Field(
        200_000,
        ge=1000,
        description="When running as root, namespace N runs as host uid base + N.",
    )
    exec_timeout_s: float = Field(30.0, gt=0, description="Wall clock per exec, in seconds.")
    exec_output_bytes: int = Field(
        1 * MIB, ge=1024, description="Output kept per stream per exec; the rest is discarded."
    )
    exec_memory_mb: int = Field(1024, ge=16, description="Memory limit per namespace (MiB).")
    exec_pids: int = Field(256, ge=8, description="Process limit per namespace.")
    exec_file_mb: int = Field(100, ge=1, description="Largest file a command may write (MiB).")
    exec_cpu_s: int = Field(60, ge=1, description="CPU seconds per process.")
    process_max: int = Field(
        16, ge=1, description="Processes that outlive a call, running at once per namespace."
    )
    process_buffer_kb: int = Field(
        1024, ge=128, description="Output kept per such process for readers that reconnect (KiB)."
    )
    max_namespaces_per_workspace: int = Field(
        1000,
        ge=1,
        description="Namespaces one workspace may create; beyond it 409 `namespace_limit_reached`.",
    )
    namespace_disk_mb: int = Field(
        0,
        ge=0,
        description="Local runtime, as root: each new namespace is a loop-mounted ext4 image of this size "
        "(MiB), a quota the kernel enforces; 0 turns it off.",
    )
    namespace_disk_preallocate: bool = Field(
        True,
        description="Allocate each namespace image's full size up front (no overcommit; a new namespace "
        "needs that much free disk). `false`: sparse images, which may overcommit the disk.",
    )
    data_reserve_mb: int = Field(
        64,
        ge=0,
        description="Changes are refused (507) when the data dir's filesystem has less free space "
        "than this (MiB), so the database can always commit; 0 turns it off.",
    )
    write_max_bytes: int = Field(10 * MIB, ge=1, description="Largest /write content (bytes).")
    upload_max_bytes: int = Field(100 * MIB, ge=1, description="Largest PUT /files body (bytes).")
    read_max_bytes: int = Field(100 * MIB, ge=1, description="Largest GET /files body (bytes).")
    json_body_max_bytes: int = Field(32 * MIB, ge=1024, description="Largest JSON request body (bytes).")
    admin_key: SecretStr | None = Field(
        None,
        description="If set, an admin key accepted for the first workspace (e.g. from a Secret).",
    )
    bootstrap_on_start: bool = Field(
        True, description="Create a first workspace and keys when the database has none."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: one JSON object per line with the request id (production)."
    )
    shutdown_grace_s: float = Field(
        40.0,
        ge=0,
        description="On SIGTERM, how long in-flight requests (e.g. execs) may take to finish.",
    )
    shutdown_drain_s: float = Field(
        0.0,
        ge=0,
        le=120,
        description="On SIGTERM, keep serving this long first, /readyz failing and connections closed "
        "after each response, so load balancers stop routing here before the listener closes.",
    )
    k8s_namespace: str = Field(
        "default", description="Kubernetes namespace of the TroveNamespace objects and sandbox pods."
    )
    k8s_sandbox_image: str = Field(
        "trove-sandbox:0.1.0", description="Sandbox pod image (kubernetes runtime)."
    )
    k8s_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Pull policy of the sandbox image."
    )
    k8s_storage_size: str = Field("1Gi", description="PVC size of a new namespace (a Kubernetes quantity).")
    k8s_storage_class: str | None = Field(None, description="StorageClass of new PVCs (unset: the default).")
    k8s_cpu_request: str = Field("10m", description="Sandbox pod CPU request.")
    k8s_cpu_limit: str = Field("1", description="Sandbox pod CPU limit.")
    k8s_memory_request: str = Field("32Mi", description="Sandbox pod memory request.")
    k8s_memory_limit: str = Field("1Gi", description="Sandbox pod memory limit.")
    k8s_ephemeral_storage_request: str = Field(
        "64Mi", description="Sandbox pod ephemeral-storage request (writable layer, logs, /tmp)."
    )
    k8s_ephemeral_storage_limit: str = Field(
        "1Gi", description="Sandbox pod ephemeral-storage limit (beyond it the kubelet evicts the pod)."
    )
    k8s_max_processes: int = Field(
        1024, ge=16, le=1_000_000, description="Processes and threads one sandbox pod's commands may run."
    )
    k8s_sandbox_egress: Literal["none", "internet", "all"] = Field(
        "internet",
        description="Sandbox pods' egress: `internet` (not the cluster, not metadata), `all`, `none`.",
    )
    k8s_ready_timeout_s: float = Field(
        20.0, gt=0, lt=30, description="How long a call waits for a namespace's pod to be Ready before 503."
    )
    k8s_idle_suspend_s: int = Field(
        300, ge=0, description="Suspend a namespace's pod after this long idle (PVC kept); 0 never."
    )
    k8s_rollout: Literal["idle", "immediate", "never"] = Field(
        "idle",
        description="How a changed sandbox template (image, resources, egress, idle limit) reaches "
        "existing namespaces: `idle` at their next idle moment (suspended, or no call for "
        "`TROVE_K8S_ROLLOUT_IDLE_S`), `immediate` now (a call in flight fails), "
        "`never` (new namespaces only).",
    )
    k8s_rollout_idle_s: float = Field(
        180.0,
        ge=0,
        description="A namespace without a call for this long may be rolled (`TROVE_K8S_ROLLOUT=idle`); "
        "above 120 s so calls through other API replicas, stamped at least every minute, count.",
    )
    k8s_channel_idle_s: float = Field(
        300.0, gt=0, description="Close a pod's warm exec channel after this long unused."
    )
    k8s_pool_channels: int = Field(
        4,
        ge=0,
        le=64,
        description="Warm-pool pods each API replica opens an agent channel to before a namespace "
        "claims one (its first call then skips starting the agent); 0 none.",
    )
    k8s_kubeconfig: Path | None = Field(
        None, description="Kubeconfig file (default: $KUBECONFIG or ~/.kube/config; unused in-cluster)."
    )
    k8s_in_cluster: bool | None = Field(
        None, description="Use the pod's service account (default: detect from the environment)."
    )
    public_base_url: str | None = Field(
        None,
        description="Externally visible base URL for device-login links (default: the request's own).",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Allow webhook deliveries to private, loopback and link-local addresses (tests, dev).",
    )
    webhook_timeout_s: float = Field(
        10.0,
        gt=0,
        lt=30,
        description="Deadline of one webhook delivery attempt, connect to last byte read (and of /test), s.",
    )
    webhook_max_attempts: int = Field(
        8, ge=1, le=50, description="Attempts per webhook delivery before it is marked failed."
    )
    webhook_backoff_base_s: float = Field(
        5.0, gt=0, description="First retry delay of a webhook delivery; doubles per attempt, with jitter."
    )
    webhook_backoff_max_s: float = Field(
        3600.0, gt=0, description="Longest delay between webhook attempts (also caps Retry-After)."
    )
    webhook_poll_interval_s: float = Field(
        1.0, gt=0, description="How often the dispatcher looks for due deliveries without a wake-up."
    )
    webhook_concurrency: int = Field(16, ge=1, le=256, description="Webhook deliveries in flight at once.")
    webhook_dispatch: bool = Field(
        True, description="Run the webhook dispatcher in this process (turn off on API-only replicas)."
    )
    sse_keepalive_s: float = Field(15.0, gt=0, description="Seconds between SSE keep-alive comments.")
    events_poll_interval_s: float = Field(
        1.0,
        gt=0,
        description="How often the event hub checks the log for events written by other processes.",
    )
    device_code_ttl_s: int = Field(600, ge=30, description="Lifetime of a device-login code, seconds.")
    device_poll_interval_s: int = Field(
        2, ge=1, description="Poll interval the device-login flow advertises to the CLI, seconds."
    )
    device_start_rate: int = Field(
        10, ge=1, description="Device-login flows one client IP may start per minute."
    )
    device_form_rate: int = Field(
        20,
        ge=1,
        description="Approval-form submissions (and failed dashboard sign-ins) one client IP may "
        "make per minute.",
    )
    device_default_namespace: str = Field(
        "default",
        description="Namespace a device-login key is locked to when the approver names none.",
    )
    dashboard_session_ttl_s: int = Field(
        8 * 3600, ge=60, description="Lifetime of a dashboard sign-in (its session cookie), seconds."
    )
    dashboard_secret: SecretStr | None = Field(
        None,
        description="Key that signs dashboard session cookies; give every replica the same one "
        "(default: a random key kept in the data dir).",
    )
    http_header_max_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request line plus headers (bytes); beyond it 431."
    )
    http_header_max_count: int = Field(
        100, ge=8, description="Most header fields in one request; beyond it 431."
    )
    http_header_timeout_s: float = Field(
        10.0, gt=0, description="Time a client has to send a request's headers; then 408 and close."
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1,::1",
        description="Peers (comma-separated IPs/CIDRs, `*` any) whose X-Forwarded-For is believed.",
    )

    snapshot_store: Literal["directory", "s3"] = Field(
        "directory",
        description="Where snapshot tarballs live: a directory (default) or an S3-compatible bucket.",
    )
    snapshot_dir: Path | None = Field(
        None, description="Directory of the `directory` snapshot store (default: <data dir>/snapshots)."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint URL (MinIO, SeaweedFS, …); unset means AWS S3 itself."
    )
    s3_bucket: str | None = Field(None, description="S3 bucket for snapshots (required for the s3 store).")
    s3_access_key_id: str | None = Field(
        None, description="S3 access key id (unset: boto3's default credential chain)."
    )
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_prefix: str = Field("snapshots/", description="Key prefix for snapshot objects in the bucket.")
    s3_create_bucket: bool = Field(True, description="Create the bucket on first use when it is missing.")
    s3_part_size_mb: int = Field(
        8, ge=5, le=512, description="Multipart upload part size (MiB); bounds memory per snapshot."
    )
    snapshot_retention_days: int = Field(
        30, ge=1, description="Automatic (`auto-`) snapshots older than this are pruned; `snap-` never."
    )
    snapshot_daily: bool = Field(
        True, description="Take daily `auto-` snapshots of changed namespaces and prune old ones."
    )
    snapshot_daily_hour: int = Field(
        3, ge=0, le=23, description="UTC hour from which the daily snapshot and prune jobs run."
    )
    snapshot_job_interval_s: float = Field(
        300.0, gt=0, description="How often the server checks whether the daily jobs are due, seconds."
    )
    sweep_interval_s: float = Field(
        300.0,
        gt=0,
        description="How often crash leftovers (pending events, temp files) are resolved, seconds.",
    )
    stale_temp_s: float = Field(
        3600.0,
        gt=0,
        description="Age at which an untouched upload or snapshot temp file is a crash leftover, seconds.",
    )

    e2b_domain: str | None = Field(
        None,
        description="Domain of the E2B-compatible API's host-name routing (`api.<domain>`, "
        "`<port>-<sandboxID>.<domain>`; clients set `E2B_DOMAIN` to it). Unset: only `/e2b` paths.",
    )
    e2b_default_timeout_s: int = Field(
        300, ge=1, description="E2B sandbox timeout when `Sandbox.create` names none (E2B's own default)."
    )
    e2b_max_timeout_s: int = Field(86400, ge=1, description="Longest E2B sandbox timeout accepted.")
    e2b_resume_wait_s: float = Field(
        45.0,
        gt=0,
        description="How long E2B's `connect` of a paused sandbox waits for it to answer, seconds "
        "(E2B answers a running sandbox; the SDK gives a call 60 s). On Kubernetes this spans the "
        "old pod's teardown and the new pod's start.",
    )
    e2b_sweep_interval_s: float = Field(
        2.0, gt=0, description="How often expired E2B sandboxes are paused or killed."
    )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        # uvicorn would quietly take a typo for a host name no peer ever has.
        for entry in (part.strip() for part in value.split(",")):
            if entry and entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"forwarded_allow_ips: {entry!r} is not an IP address or CIDR") from None
        return value

    @field_validator("sandbox_network", mode="before")
    @classmethod
    def _network_on_means_outbound(cls, value: object) -> object:
        # `on` (shared host network) no longer exists; keep old configs starting, with the
        # stronger isolation, and say so.
        if value == "on":
            logging.getLogger(__name__).warning(
                "TROVE_SANDBOX_NETWORK=on is deprecated and now means `outbound`: sandboxes reach "
                "the internet but no longer the host's loopback or private networks"
            )
            return "outbound"
        return value

    @field_validator("sandbox_network_allow")
    @classmethod
    def _allowed_networks_are_cidrs(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            network = ipaddress.ip_network(item, strict=False)
            if not isinstance(network, ipaddress.IPv4Network):
                raise ValueError(f"{item}: only IPv4 networks (sandboxes have no IPv6 path out)")
            # Loopback, and slirp's own network (a wider range around it is fine: the routes
            # over slirp's network stay more specific).
            if network.overlaps(ipaddress.IPv4Network("127.0.0.0/8")) or network.subnet_of(
                ipaddress.IPv4Network("10.0.2.0/24")
            ):
                raise ValueError(f"{item}: loopback and 10.0.2.0/24 (slirp's network) stay refused")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.write_max_bytes > self.json_body_max_bytes:
            raise ValueError("write_max_bytes must not exceed json_body_max_bytes")
        if self.snapshot_store == "s3" and not self.s3_bucket:
            raise ValueError("snapshot_store=s3 needs s3_bucket (TROVE_S3_BUCKET)")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.resolve() / 'trove.db'}"


def load_settings(**overrides: object) -> Settings:
    """Read the environment once (explicit overrides win)."""
    return Settings(**overrides)  # type: ignore[arg-type]
