"""Helpers shared by the test files live in tests/support/ (on pytest's pythonpath)."""

import logging

import pytest


@pytest.fixture(autouse=True)
def _root_logger_restored():
    """A command's ``main`` run in-process (``cli.main([...])``) installs the one
    log format on the root logger (``common.log.setup``), with a handler bound
    to that test's captured stderr: put the root logger back after each test
    so that handler never outlives it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
