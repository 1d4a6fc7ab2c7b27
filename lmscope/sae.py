"""``lmscope.sae``: the public API of the sae family (:mod:`lmscope.methods.sae`)."""

from lmscope.methods.sae import *  # noqa: F403
from lmscope.methods.sae import __all__  # noqa: F401
