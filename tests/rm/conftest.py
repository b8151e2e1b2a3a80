"""A CLI run sets up logging (ours, and transformers' library handler) on the stderr that pytest captures for
that test; drop the handlers a test added, so later tests do not log into a closed stream."""
from __future__ import annotations

import logging

import pytest


def _handlers() -> dict:
    loggers = [logging.getLogger()] + [l for l in logging.root.manager.loggerDict.values() if isinstance(l, logging.Logger)]
    return {id(l): (l, list(l.handlers)) for l in loggers}


@pytest.fixture(autouse=True)
def _drop_log_handlers():
    before = _handlers()
    yield
    for key, (logger, handlers) in _handlers().items():
        for handler in handlers:
            if key not in before or handler not in before[key][1]:
                logger.removeHandler(handler)
