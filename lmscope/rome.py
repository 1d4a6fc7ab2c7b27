"""``lmscope.rome``: the public API of the rome family (:mod:`lmscope.methods.rome`)."""

from lmscope.methods.rome import *  # noqa: F403
from lmscope.methods.rome import __all__  # noqa: F401
