"""The ``lmscope`` command line.

``table`` (every command's group, module, help and old names: all ``--help`` needs), ``registry`` (the functions
the command modules register), ``options`` (config dataclasses as options), ``operations`` (commands made from
the operations of :mod:`lmscope.ops`, as the workbench's tasks are), one module per method family
(``model``, ``lens``, ``trace``, ``rome``, ``stages``, ``sae``, ``patching``, ``autointerp``, ``neurons``,
``projector``, ``graphs``, ``serve``), and ``app`` (the parser, and the one place user errors are reported).
"""


def main(argv: list[str] | None = None) -> int:
    """The ``lmscope`` command (imports only what the chosen command needs)."""
    from lmscope.cli.app import main as run

    return run(argv)


def build_parser(only=None):
    """The full argument parser (every command module imported); see :func:`lmscope.cli.app.build_parser`."""
    from lmscope.cli.app import build_parser as build

    return build(only)


__all__ = ["build_parser", "main"]
