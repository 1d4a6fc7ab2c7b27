"""The autointerp tests' fixtures, defined in fixtures.py (importable, so that tests/cli can use them too)."""

from tests.methods.autointerp.fixtures import corpus, lm, stub  # noqa: F401
