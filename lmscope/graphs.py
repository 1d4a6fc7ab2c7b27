"""``lmscope.graphs``: the public API of the attribution graphs (:mod:`lmscope.methods.graphs`)."""

from lmscope.methods.graphs import *  # noqa: F403
from lmscope.methods.graphs import __all__  # noqa: F401
