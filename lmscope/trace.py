"""``lmscope.trace``: the public API of the trace family (:mod:`lmscope.methods.trace`)."""

from lmscope.methods.trace import *  # noqa: F403
from lmscope.methods.trace import __all__  # noqa: F401
