"""Device-login wire models (WIRE.md E14, E15, A18)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from trove_api.schemas.common import Text
from trove_core.names import NAMESPACE_PATTERN


class DeviceStart(BaseModel):
    device_code: str = Field(description="Secret; the CLI polls with it.")
    user_code: str = Field(description="`XXXX-XXXX`, shown to the person approving.")
    verification_uri: str
    verification_uri_complete: str
    interval: int = Field(description="Seconds between polls.")
    expires_in: int = Field(description="Seconds until the codes expire.")


class DevicePollRequest(BaseModel):
    device_code: Text = Field(min_length=1, max_length=256)


class DevicePoll(BaseModel):
    status: Literal["pending", "approved", "denied", "expired"]
    api_key: str | None = Field(None, description="Only in the one `approved` answer.")
    workspace_id: str | None = None


class DeviceDecision(BaseModel):
    user_code: Text = Field(min_length=1, max_length=32)
    namespace: Text | None = Field(
        None,
        pattern=NAMESPACE_PATTERN,
        description="Lock the new key to it (default: the server's TROVE_DEVICE_DEFAULT_NAMESPACE).",
    )
    name: Text | None = Field(None, max_length=200, description="Name of the minted key.")
    all_namespaces: bool = Field(
        False, description="Mint an unlocked key (any namespace) instead; only without `namespace`."
    )


class DeviceApproved(BaseModel):
    status: Literal["approved"]
    key_id: str
    workspace_id: str
    namespace: str | None


class DeviceDenied(BaseModel):
    status: Literal["denied"]
