"""Every error the server can answer with, one root, each with a stable snake_case ``code``.

    TroveError (500 internal_error)
    ├── BadRequestError (400 bad_request)
    │   ├── PathRejectedError (400 path_rejected)
    │   ├── NamespaceInvalidError (400 namespace_invalid)
    │   ├── NamespaceRequiredError (400 namespace_required)
    │   ├── NotADirectoryError_ (400 not_a_directory)
    │   ├── IsADirectoryError_ (400 is_a_directory)
    │   ├── RootDeleteRefusedError (400 root_delete_refused)
    │   ├── DeviceCodeInvalidError (400 device_code_invalid)
    │   ├── InvalidUnicodeError (400 invalid_unicode)
    │   ├── MalformedRequestError (400 malformed_request)
    │   └── HttpError (400 http_error)
    ├── UnauthenticatedError (401 unauthenticated)
    ├── ForbiddenError (403 forbidden)
    │   ├── AdminKeyOnFilesystemError (403 admin_key_on_filesystem)
    │   ├── AdminRequiredError (403 admin_required)
    │   ├── NamespaceForbiddenError (403 namespace_forbidden)
    │   ├── WorkspaceForbiddenError (403 workspace_forbidden)
    │   └── CsrfRejectedError (403 csrf_rejected)
    ├── NotFoundError (404 not_found)
    │   ├── RouteNotFoundError (404 route_not_found)
    │   ├── PathNotFoundError (404 path_not_found)
    │   ├── KeyNotFoundError (404 key_not_found)
    │   ├── WebhookNotFoundError (404 webhook_not_found)
    │   ├── DeliveryNotFoundError (404 delivery_not_found)
    │   ├── SnapshotNotFoundError (404 snapshot_not_found)
    │   └── ProcessNotFoundError (404 process_not_found)
    ├── MethodNotAllowedError (405 method_not_allowed)
    ├── ExecTimeoutError (408 exec_timeout)
    ├── HeaderTimeoutError (408 header_timeout)
    ├── NamespaceLimitReachedError (409 namespace_limit_reached)
    ├── ProcessLimitReachedError (409 process_limit_reached)
    ├── ProcessStdinClosedError (409 process_stdin_closed)
    ├── PayloadTooLargeError (413 payload_too_large)
    ├── RangeNotSatisfiableError (416 range_not_satisfiable)
    ├── InvalidRequestError (422 invalid_request)
    │   ├── SnapshotCorruptError (422 snapshot_corrupt)
    │   ├── ProcessStartFailedError (422 process_start_failed)
    │   └── ProcessNotAPtyError (422 process_not_a_pty)
    ├── RateLimitedError (429 rate_limited)
    ├── HeadersTooLargeError (431 headers_too_large)
    ├── StorageFullError (507 storage_full)
    ├── KubernetesApiError (500 kubernetes_error)
    ├── SandboxUnavailableError (500 sandbox_unavailable)
    ├── E2bNotImplementedError (501 not_implemented)
    ├── SandboxPortClosedError (502 sandbox_port_closed)
    ├── EgressRulesUnsupportedError (501 egress_rules_unsupported)
    ├── VolumeError (500 internal_error)
    └── UnavailableError (503 unavailable)
        ├── SnapshotStoreUnavailableError (503 snapshot_store_unavailable)
        ├── SandboxNotReadyError (503 sandbox_not_ready)
        ├── PodGoneError (503 sandbox_restarting)
        ├── ChannelLostError (503 sandbox_channel_lost)
        └── AgentMissingError (503 sandbox_agent_missing)

Codes are wire strings: add new ones, never rename.
"""

from __future__ import annotations

from typing import Any, ClassVar


class TroveError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal server error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        internal: str | None = None,
    ) -> None:
        self.detail = detail or self.title
        # What only the server log may see (hosts, ports, paths): the answer names the
        # request id instead.
        self.internal = internal
        self.retry_after = retry_after
        self.headers = headers or {}
        # Extra members merged into the problem body (e.g. partial stdout on a timeout).
        self.extra = extra or {}
        super().__init__(self.detail)


class BadRequestError(TroveError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class PathRejectedError(BadRequestError):
    code = "path_rejected"
    title = "Path rejected"


class InvalidUnicodeError(BadRequestError):
    code = "invalid_unicode"
    title = "Text is not valid Unicode"


class NamespaceInvalidError(BadRequestError):
    code = "namespace_invalid"
    title = "Invalid namespace"


class NamespaceRequiredError(BadRequestError):
    code = "namespace_required"
    title = "Namespace required"


class NotADirectoryError_(BadRequestError):
    code = "not_a_directory"
    title = "Not a directory"


class IsADirectoryError_(BadRequestError):
    code = "is_a_directory"
    title = "Is a directory"


class RootDeleteRefusedError(BadRequestError):
    code = "root_delete_refused"
    title = "The namespace root cannot be deleted"


class DeviceCodeInvalidError(BadRequestError):
    code = "device_code_invalid"
    title = "Unknown, expired or used login code"


class UnauthenticatedError(TroveError):
    status = 401
    code = "unauthenticated"
    title = "Missing, unknown or revoked API key"


class ForbiddenError(TroveError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class AdminKeyOnFilesystemError(ForbiddenError):
    code = "admin_key_on_filesystem"
    title = "Admin keys cannot touch the filesystem"


class AdminRequiredError(ForbiddenError):
    code = "admin_required"
    title = "An admin key is required"


class NamespaceForbiddenError(ForbiddenError):
    code = "namespace_forbidden"
    title = "This key is locked to another namespace"


class WorkspaceForbiddenError(ForbiddenError):
    code = "workspace_forbidden"
    title = "This key belongs to another workspace"


class CsrfRejectedError(ForbiddenError):
    code = "csrf_rejected"
    title = "The form's CSRF token is missing or wrong"


class NotFoundError(TroveError):
    status = 404
    code = "not_found"
    title = "Not found"


class PathNotFoundError(NotFoundError):
    code = "path_not_found"
    title = "Path not found"


class KeyNotFoundError(NotFoundError):
    code = "key_not_found"
    title = "Key not found"


class WebhookNotFoundError(NotFoundError):
    code = "webhook_not_found"
    title = "Webhook not found"


class DeliveryNotFoundError(NotFoundError):
    code = "delivery_not_found"
    title = "Webhook delivery not found"


class SnapshotNotFoundError(NotFoundError):
    code = "snapshot_not_found"
    title = "Snapshot not found"


class ExecTimeoutError(TroveError):
    status = 408
    code = "exec_timeout"
    title = "Command timed out"


class NamespaceLimitReachedError(TroveError):
    status = 409
    code = "namespace_limit_reached"
    title = "This workspace has as many namespaces as it may have"


class PayloadTooLargeError(TroveError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class RangeNotSatisfiableError(TroveError):
    status = 416
    code = "range_not_satisfiable"
    title = "Range not satisfiable"


class InvalidRequestError(TroveError):
    status = 422
    code = "invalid_request"
    title = "Invalid request"


class SnapshotCorruptError(InvalidRequestError):
    """A stored tarball that fails its checksum or holds a member a restore must refuse."""

    code = "snapshot_corrupt"
    title = "Snapshot cannot be restored"


class RateLimitedError(TroveError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


class UnavailableError(TroveError):
    status = 503
    code = "unavailable"
    title = "Service unavailable"


class StorageFullError(TroveError):
    status = 507
    code = "storage_full"
    title = "Insufficient storage"


class SnapshotStoreUnavailableError(UnavailableError):
    code = "snapshot_store_unavailable"
    title = "Snapshot store unavailable"


class MalformedRequestError(BadRequestError):
    """The HTTP parser refused the request (e.g. a control byte in a header)."""

    code = "malformed_request"
    title = "Malformed HTTP request"


class HeaderTimeoutError(TroveError):
    status = 408
    code = "header_timeout"
    title = "Request headers took too long"


class HeadersTooLargeError(TroveError):
    status = 431
    code = "headers_too_large"
    title = "Request header fields too large"


# Raised by the web framework's own refusals (``problems._http_error``): no route, wrong method,
# any other HTTPException (FastAPI's "error parsing the body", 400). The answer keeps the
# framework's status and, for 405 and the rest, its wording as the title.
class RouteNotFoundError(NotFoundError):
    code = "route_not_found"
    title = "Not found"


class MethodNotAllowedError(TroveError):
    status = 405
    code = "method_not_allowed"
    title = "Method Not Allowed"


class HttpError(BadRequestError):
    code = "http_error"
    title = "HTTP error"


# The runtimes' own failures (the Runtime protocol: a runtime raises these types, never its own).


class SandboxUnavailableError(TroveError):
    """Local runtime: bubblewrap or its syscall filter cannot work on this host (raised at start)."""

    code = "sandbox_unavailable"
    title = "bubblewrap cannot run on this host"


class VolumeError(TroveError):
    """Local runtime: a namespace's ext4 image cannot be made, mounted or unmounted."""

    code = "internal_error"
    title = "A namespace volume cannot be mounted"


class KubernetesApiError(TroveError):
    """Kubernetes runtime: the API server refused a call with a 4xx (5xx and 429 are UnavailableError)."""

    code = "kubernetes_error"
    title = "The Kubernetes API refused a call"


class SandboxNotReadyError(UnavailableError):
    code = "sandbox_not_ready"
    title = "The namespace's sandbox is not ready yet"


class PodGoneError(UnavailableError):
    code = "sandbox_restarting"
    title = "The sandbox pod is restarting"


class ChannelLostError(UnavailableError):
    code = "sandbox_channel_lost"
    title = "The connection to the sandbox dropped"


class AgentMissingError(UnavailableError):
    code = "sandbox_agent_missing"
    title = "The sandbox image has no trove agent"


# Processes that outlive a call (the Runtime's start_process and friends).


class ProcessNotFoundError(NotFoundError):
    code = "process_not_found"
    title = "No such process in this namespace"


class ProcessLimitReachedError(TroveError):
    status = 409
    code = "process_limit_reached"
    title = "This namespace runs as many processes as it may"


class ProcessStdinClosedError(TroveError):
    status = 409
    code = "process_stdin_closed"
    title = "The process takes no more input"


class ProcessStartFailedError(InvalidRequestError):
    code = "process_start_failed"
    title = "The process could not be started"


class ProcessNotAPtyError(InvalidRequestError):
    code = "process_not_a_pty"
    title = "The process has no terminal"


class E2bNotImplementedError(TroveError):
    """The E2B-compatible API (``/e2b``): a route or method of E2B's that Trove does not serve yet."""

    status = 501
    code = "not_implemented"
    title = "Not implemented by Trove's E2B-compatible API"


class SandboxPortClosedError(TroveError):
    """A port in the sandbox (E2B's ``get_host``): nothing accepts connections on it, or it reset."""

    status = 502
    code = "sandbox_port_closed"
    title = "Nothing answers on that port in the sandbox"


class EgressRulesUnsupportedError(TroveError):
    """Egress rules (E2B's ``update_network``) asked of a sandbox whose runtime cannot enforce
    them: a local server without network namespaces (not root, no slirp4netns), or unsandboxed."""

    status = 501
    code = "egress_rules_unsupported"
    title = "This server cannot enforce egress rules for its sandboxes"
