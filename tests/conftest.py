"""Shared by every test: commands run in-process (`main`) configure the root logger as the
command line does (level, handlers); each test gets it back as it found it, so one test's
`--log-level error` does not hide another's warnings from caplog."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
