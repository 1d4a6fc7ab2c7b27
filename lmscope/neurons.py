"""``lmscope.neurons``: the public API of the neurons family (:mod:`lmscope.methods.neurons`)."""

from lmscope.methods.neurons import *  # noqa: F403
from lmscope.methods.neurons import __all__  # noqa: F401
