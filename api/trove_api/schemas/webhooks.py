"""Webhook wire models (WIRE.md 2.1 WebhookMetadata/WebhookCreated, E19–E22) and our extras."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from trove_api.schemas.common import Text
from trove_core.names import NAMESPACE_PATTERN


class WebhookCreateRequest(BaseModel):
    url: Text = Field(min_length=1, max_length=2048, description="An http:// or https:// URL.")
    events: list[Text] | None = Field(
        None,
        max_length=64,
        description='Event types, or `["*"]` (the default) for all, future ones included.',
    )
    namespace: Text | None = Field(
        None, pattern=NAMESPACE_PATTERN, description="Only events of this namespace (default: all)."
    )
    description: Text | None = Field(None, max_length=500)


class WebhookMetadata(BaseModel):
    webhook_id: str
    url: str
    events: list[str]
    namespace: str | None
    description: str | None
    enabled: bool
    created_at: str
    last_delivery_at: str | None = None
    last_delivery_ok: bool | None = None
    last_delivery_status: int | None = None


class WebhookCreated(WebhookMetadata):
    signing_secret: str = Field(description="`trove-whsec-…`. Shown once; verify with `verify_webhook`.")


class WebhookList(BaseModel):
    webhooks: list[WebhookMetadata]


class WebhookDeleted(BaseModel):
    webhook_id: str
    deleted: bool


class WebhookTestResult(BaseModel):
    ok: bool = Field(description="The receiver answered 2xx.")
    event_id: str
    status: int | None = Field(description="The receiver's HTTP status; null when none came back.")
    error: str | None = Field(description="Why the delivery failed (transport error, refused address).")


class SecretRotated(BaseModel):
    webhook_id: str
    signing_secret: str = Field(description="The new secret, shown once; the old one no longer signs.")


class Delivery(BaseModel):
    delivery_id: str
    webhook_id: str
    event_id: str
    event_type: str | None
    status: Literal["pending", "delivered", "failed"]
    attempts: int = Field(description="Attempts in the current round (a retry starts a new round).")
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: str
    updated_at: str


class Attempt(BaseModel):
    attempt: int
    started_at: str
    duration_ms: int
    status_code: int | None
    error: str | None
    response_excerpt: str | None


class DeliveryDetail(Delivery):
    attempt_log: list[Attempt]


class DeliveryList(BaseModel):
    deliveries: list[Delivery] = Field(description="Newest first.")
