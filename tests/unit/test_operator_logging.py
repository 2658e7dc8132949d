"""The operator's log says what changed, not that each of kopf's timers ran once more."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from kopf._core.actions import loggers as kopf_loggers

from trove_operator.cli import configure_logging


@pytest.fixture(autouse=True)
def restore_levels() -> Iterator[None]:
    names = ["", "kopf.objects", "trove_operator"]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_kopf_per_object_chatter_is_off_by_default() -> None:
    configure_logging(verbose=False)
    root = logging.getLogger()
    root.setLevel(logging.INFO)  # basicConfig keeps an earlier root level (pytest's)
    # The logger kopf's handlers write "Handler 'x' succeeded." to (kopf's own object).
    assert kopf_loggers.logger.name == "kopf.objects"
    assert not kopf_loggers.logger.isEnabledFor(logging.INFO)
    assert kopf_loggers.logger.isEnabledFor(logging.WARNING)
    assert logging.getLogger("trove_operator.handlers").isEnabledFor(logging.INFO)


def test_verbose_shows_everything() -> None:
    configure_logging(verbose=True)
    logging.getLogger().setLevel(logging.DEBUG)
    assert kopf_loggers.logger.isEnabledFor(logging.DEBUG)
