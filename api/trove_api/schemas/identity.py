"""Identity and key wire models (WIRE.md E13, E16–E18)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from trove_api.schemas.common import Text
from trove_core.names import NAMESPACE_PATTERN


class Me(BaseModel):
    workspace_id: str
    key_id: str
    key_name: str
    scope: Literal["workspace", "admin"]
    namespace: str | None


class KeyCreateRequest(BaseModel):
    name: Text = Field(min_length=1, max_length=200)
    namespace: Text | None = Field(None, pattern=NAMESPACE_PATTERN)
    admin: bool = False


class KeyMetadata(BaseModel):
    key_id: str
    name: str
    prefix: str = Field(description="Non-secret leading characters of the key.")
    scope: Literal["workspace", "admin"]
    namespace: str | None
    created_at: str


class KeyCreated(KeyMetadata):
    api_key: str = Field(description="The key itself. Shown once; only its hash is stored.")


class KeyList(BaseModel):
    keys: list[KeyMetadata]


class KeyRevoked(BaseModel):
    key_id: str
    revoked: bool
