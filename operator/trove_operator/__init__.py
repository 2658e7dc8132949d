"""The Trove operator: kopf handlers that give each TroveNamespace a PVC-backed sandbox pod."""

from trove_operator import ghosts, handlers, lifecycle, observe, pool_handlers

__all__ = ["ghosts", "handlers", "lifecycle", "observe", "pool_handlers"]
