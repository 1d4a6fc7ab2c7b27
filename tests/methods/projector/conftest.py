"""The projector tests' fixture, defined in fixtures.py (importable, so that tests/cli can use it too)."""

from tests.methods.projector.fixtures import folders  # noqa: F401
