"""The SAE tests' fixtures, defined in fixtures.py (importable, so that tests/cli can use them too)."""

from tests.methods.sae.fixtures import corpus, harvest_cfg, lm, private_store, train_cfg  # noqa: F401
