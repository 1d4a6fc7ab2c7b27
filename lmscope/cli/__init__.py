"""The ``lmscope`` command line.

``registry`` (commands, global options), one module per method family (``model``, ``lens``, ``trace``, ``rome``,
``stages``) registering its commands, and ``app`` (the parser and the one place user errors are reported).
"""

from lmscope.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
