"""``lmscope.projector``: the public API of the projector family (:mod:`lmscope.methods.projector`)."""

from lmscope.methods.projector import *  # noqa: F403
from lmscope.methods.projector import __all__  # noqa: F401
