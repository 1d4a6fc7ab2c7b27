"""Fixtures of the workbench tests served for real: a tiny model and a workbench on a free loopback port."""

import pytest

from lmscope.web import Background
from lmscope.web.tasks import Workbench
from tests.helpers import tiny_lm
from tests.web.http import Http


@pytest.fixture(scope="module")
def lm():
    return tiny_lm("llama")


@pytest.fixture
def served(lm, tmp_path):
    """A workbench on a free loopback port over ``tmp_path/results``, with an HTTP client that holds its token."""
    server = Background(Workbench(lm, tmp_path / "results" / "serve"), [tmp_path / "results"])
    server.http = Http(server.url, server.token)
    yield server
    server.stop()
