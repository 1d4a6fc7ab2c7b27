"""``lmscope.lens``: the public API of the lens family (:mod:`lmscope.methods.lens`)."""

from lmscope.methods.lens import *  # noqa: F403
from lmscope.methods.lens import __all__  # noqa: F401
