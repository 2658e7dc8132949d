"""Server settings: one pydantic ``Settings`` read from flat ``TROVE_*`` environment variables.

No field may reuse a name the official client reads (``TROVE_API_KEY``, ``TROVE_BASE_URL``,
``TROVE_NAMESPACE``, ``TROVE_WORKSPACE_ID``, ``TROVE_WEBHOOK_SECRET``), so a shell that holds
both never confuses them. Build it once at the edge (``load_settings``) and pass it in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, computed_field, model_validator
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
    sandbox_network: Literal["on", "off"] = Field(
        "on", description="Whether sandboxed commands get network access."
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

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.write_max_bytes > self.json_body_max_bytes:
            raise ValueError("write_max_bytes must not exceed json_body_max_bytes")
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
