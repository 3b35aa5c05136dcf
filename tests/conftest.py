"""Helpers shared by the test files live in tests/support/ (on pytest's pythonpath)."""
