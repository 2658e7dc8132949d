"""Wire-level constants: header names and the fixed limits the official client relies on."""

from typing import Final

HEADER_NAMESPACE: Final = "X-Namespace"
HEADER_REQUEST_ID: Final = "X-Request-Id"
HEADER_SIZE: Final = "X-Trove-Size"
HEADER_TRUNCATED: Final = "X-Trove-Truncated"

MIB: Final = 1024 * 1024

# 1 MB is 1 048 576 bytes everywhere the client checks it (WIRE.md A7).
STDIN_MAX_BYTES: Final = 1 * MIB
PREVIEW_MAX_BYTES: Final = 1 * MIB
LIST_MAX_ENTRIES: Final = 1000
LIST_MAX_DEPTH: Final = 20
LABEL_MAX_CHARS: Final = 128

API_VERSION: Final = "2025-01-01"
