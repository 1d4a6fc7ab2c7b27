"""``lmscope.autointerp``: the public API of the autointerp family (:mod:`lmscope.methods.autointerp`)."""

from lmscope.methods.autointerp import *  # noqa: F403
from lmscope.methods.autointerp import __all__  # noqa: F401
