"""The ``lens`` command: the logit lens of one prompt (the operation :data:`lmscope.ops.LENS`)."""

from __future__ import annotations

from lmscope.cli.operations import operation_command
from lmscope.ops import LENS
from lmscope.ops.lens import DEFAULT_PROMPT

__all__ = ["DEFAULT_PROMPT", "lens"]

lens = operation_command("lens", LENS, out="out/lens", wrote="lens.json, lens.png, lens_curves.png, report.html and "
                                                              "result/")
