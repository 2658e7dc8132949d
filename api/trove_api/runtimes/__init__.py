"""Backends behind the ``Runtime`` protocol; ``make_runtime`` is the only module aware of both."""

from __future__ import annotations

from trove_core.errors import TroveError
from trove_core.runtime import Runtime
from trove_core.settings import Settings


def make_runtime(settings: Settings) -> Runtime:
    if settings.runtime == "local":
        from trove_api.runtimes.local.runtime import LocalRuntime

        return LocalRuntime.from_settings(settings)
    if settings.runtime == "kubernetes":
        from trove_api.runtimes.kubernetes.runtime import KubernetesRuntime

        return KubernetesRuntime.from_settings(settings)
    raise TroveError(
        f"Runtime {settings.runtime!r} is not available in this build yet; use TROVE_RUNTIME=local"
    )
