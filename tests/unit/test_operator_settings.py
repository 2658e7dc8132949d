"""kopf settings the operator relies on (tune() is the pure part of the startup handler)."""

from __future__ import annotations

import kopf

from trove_operator.lifecycle import tune


def test_deletions_do_not_wait_a_minute_for_a_running_timer() -> None:
    settings = kopf.OperatorSettings()
    assert settings.background.cancellation_polling == 60  # kopf's default: what this guards against
    tune(settings)
    assert settings.background.cancellation_polling <= 1


def test_kopf_state_lives_in_our_annotations_and_finalizer() -> None:
    settings = kopf.OperatorSettings()
    tune(settings)
    assert settings.persistence.finalizer == "trove.dev/operator"
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
