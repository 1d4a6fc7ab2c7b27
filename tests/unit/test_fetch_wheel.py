"""Fetching a pinned wheel where stderr is not a file (a notebook, a test runner): pip's output is captured."""

import hashlib
import io
import sys

import pytest

from lmscope import assets
from lmscope.errors import AssetError

FAKE_PIP = """#!/bin/sh
# stands in for `python -m pip download ... --dest DIR dist==version`: writes the wheel, or fails
while [ $# -gt 0 ]; do [ "$1" = --dest ] && dest=$2; shift; done
echo "Collecting the wheel"
[ -n "$FAIL" ] && { echo "ERROR: No matching distribution found"; exit 1; }
printf 'wheel bytes' > "$dest/fake_data-1.0-py3-none-any.whl"
"""


@pytest.fixture
def fake_pip(tmp_path, monkeypatch):
    script = tmp_path / "python"
    script.write_text(FAKE_PIP)
    script.chmod(0o755)
    monkeypatch.setattr(assets.sys, "executable", str(script))
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "cache"))
    return assets.Wheel("fake-data", "1.0", hashlib.sha256(b"wheel bytes").hexdigest())


def no_descriptor(monkeypatch) -> io.StringIO:
    """stderr without a file descriptor, as in Jupyter (set in the test: pytest swaps stderr between phases)."""
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    return err


def test_a_wheel_downloads_where_stderr_has_no_file_descriptor(fake_pip, monkeypatch):
    no_descriptor(monkeypatch)
    path = assets.fetch_wheel(fake_pip)
    assert path.read_bytes() == b"wheel bytes" and assets.fetch_wheel(fake_pip) == path


def test_a_failed_download_says_what_pip_said(fake_pip, monkeypatch):
    monkeypatch.setenv("FAIL", "1")
    no_descriptor(monkeypatch)
    with pytest.raises(AssetError, match="exit 1.*No matching distribution found.*pip install --no-deps fake-data"):
        assets.fetch_wheel(fake_pip)
