"""Operations: one description each of what the command line and the workbench both run.

``base`` (:class:`Operation`, :class:`Param`: parameters, bounds and checks, the config, what runs and what is
written), then one module per operation: ``lens``, ``trace``, ``lesion``, ``neurons``, ``edit``. The command line
(:mod:`lmscope.cli.operations`) and the workbench (:mod:`lmscope.web.tasks`) are generated from :data:`OPERATIONS`;
a new one is one module here and a line in the table.
"""

from lmscope.ops.base import PAGE_PROMPT_TOKENS, Operation, Param
from lmscope.ops.edit import EDIT, EditOutcome, write_edit
from lmscope.ops.lens import LENS
from lmscope.ops.lesion import LESION
from lmscope.ops.neurons import NEURONS
from lmscope.ops.trace import TRACE

OPERATIONS: dict[str, Operation] = {op.name: op for op in (LENS, TRACE, LESION, NEURONS, EDIT)}

__all__ = ["EDIT", "LENS", "LESION", "NEURONS", "OPERATIONS", "PAGE_PROMPT_TOKENS", "TRACE", "EditOutcome",
           "Operation", "Param", "write_edit"]
