"""``lmscope.patching``: the public API of the patching family (:mod:`lmscope.methods.patching`)."""

from lmscope.methods.patching import *  # noqa: F403
from lmscope.methods.patching import __all__  # noqa: F401
