"""Event type names (wire strings: add, never rename)."""

from typing import Final

FILE_WRITTEN: Final = "file.written"
FILE_DELETED: Final = "file.deleted"
EXEC_COMPLETED: Final = "exec.completed"
SNAPSHOT_CREATED: Final = "snapshot.created"
SNAPSHOT_RESTORED: Final = "snapshot.restored"
SNAPSHOT_DELETED: Final = "snapshot.deleted"
WORKSPACE_CREATED: Final = "workspace.created"
NAMESPACE_CREATED: Final = "namespace.created"
NAMESPACE_DELETED: Final = "namespace.deleted"
KEY_CREATED: Final = "key.created"
KEY_REVOKED: Final = "key.revoked"
WEBHOOK_TEST: Final = "webhook.test"
TERMINAL_OPENED: Final = "terminal.opened"
TERMINAL_CLOSED: Final = "terminal.closed"

ALL_TYPES: Final = (
    FILE_WRITTEN,
    FILE_DELETED,
    EXEC_COMPLETED,
    SNAPSHOT_CREATED,
    SNAPSHOT_RESTORED,
    SNAPSHOT_DELETED,
    WORKSPACE_CREATED,
    NAMESPACE_CREATED,
    NAMESPACE_DELETED,
    KEY_CREATED,
    KEY_REVOKED,
    WEBHOOK_TEST,
    TERMINAL_OPENED,
    TERMINAL_CLOSED,
)
