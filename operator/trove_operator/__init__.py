"""The Trove operator: kopf handlers that give each TroveNamespace a PVC-backed sandbox pod."""

from trove_operator import handlers, lifecycle, observe, pool_handlers

__all__ = ["handlers", "lifecycle", "observe", "pool_handlers"]
