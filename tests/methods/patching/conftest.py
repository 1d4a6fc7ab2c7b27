"""The IOI tests' fixture, defined in fixtures.py (importable, so that tests/cli can use it too)."""

from tests.methods.patching.fixtures import data  # noqa: F401
