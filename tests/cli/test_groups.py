"""The command line in groups: help without torch, every old name still working, the table and the registry agreeing."""

import subprocess
import sys

import pytest

from lmscope.cli import build_parser, main
from lmscope.cli.app import canonical, chosen
from lmscope.cli.registry import COMMANDS
from lmscope.cli.table import ALIASES, BY_NAME, ENTRIES, GROUPS

LIGHT = """
import sys
from lmscope.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "matplotlib", "numpy") if m in sys.modules)
print("heavy:", heavy)
"""


@pytest.mark.parametrize("argv", [["--help"], ["sae", "--help"], ["rome", "--help"], ["trace", "--help"], ["bogus"],
                                  ["sae"]])
def test_help_and_mistakes_import_neither_torch_nor_transformers(argv):
    out = subprocess.run([sys.executable, "-c", LIGHT.format(argv=argv)], capture_output=True, text=True, timeout=60)
    assert "heavy: []" in out.stdout, (out.stdout, out.stderr)
    text = out.stdout + out.stderr
    assert "COMMAND" in text or "invalid choice" in text


def test_the_table_and_the_registry_agree():
    build_parser()  # imports every command module
    assert set(COMMANDS) == set(BY_NAME)
    for entry in ENTRIES:
        assert COMMANDS[entry.name].help == entry.help and len(entry.path) == 1 or entry.path[0] in GROUPS
    modules = sorted({e.module for e in ENTRIES})
    out = subprocess.run([sys.executable, "-c", ALONE, *modules], capture_output=True, text=True, check=True)
    registered = dict(line.split(":", 1) for line in out.stdout.splitlines())
    for module in modules:  # importing the table's module alone registers its commands
        assert {e.name for e in ENTRIES if e.module == module} <= set(registered[module].split()), module


ALONE = """
import importlib, os, sys
import matplotlib.pyplot, torch, transformers.masking_utils, transformers.modeling_utils  # third-party, imported once
assert not [m for m in sys.modules if m.startswith("lmscope")]
for module in sys.argv[1:]:  # each command module imported alone, in a fork of this process
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            importlib.import_module(module)
            from lmscope.cli.registry import COMMANDS
            print(module + ":" + " ".join(COMMANDS), flush=True)
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(pid, 0)[1] == 0, module
"""


@pytest.mark.parametrize("old, new", [
    (["sae-train", "--sites", "resid_post.1"], ["sae", "train", "--sites", "resid_post.1"]),
    (["--model", "m", "edit", "--prompt", "{} is"], ["--model", "m", "rome", "edit", "--prompt", "{} is"]),
    (["eval-edits", "--data", "x"], ["rome", "eval", "--data", "x"]),
    (["trace", "Eiffel Tower is in", "--subject", "x"], ["trace", "run", "Eiffel Tower is in", "--subject", "x"]),
    (["trace-dataset", "--limit", "3"], ["trace", "dataset", "--limit", "3"]),
    (["neurons"], ["neurons", "find"]), (["neurons", "--image", "a.png"], ["neurons", "find", "--image", "a.png"]),
    (["stages", "--tokens", "8192"], ["stages", "run", "--tokens", "8192"]),
    (["lesion", "x"], ["stages", "lesion", "x"]),
    (["models"], ["model", "list"]), (["train-projector"], ["vlm", "train-projector"]),
    (["trace", "run", "x"], ["trace", "run", "x"]), (["trace", "--help"], ["trace", "--help"]),
    (["-q", "lens", "x"], ["-q", "lens", "run", "x"]), (["lens", "train"], ["lens", "train"]),
    (["serve"], ["serve"]),
    (["autointerp", "--sae", "x"], ["autointerp", "run", "--sae", "x"]), (["autointerp", "report", "x"],
                                                                         ["autointerp", "report", "x"]),
])
def test_old_names_are_rewritten_to_their_group(old, new):
    assert canonical(old) == new


def test_every_old_name_still_runs_its_command(capsys):
    for alias, entry in ALIASES.items():
        with pytest.raises(SystemExit) as done:
            grouped = alias in ("trace", "neurons", "stages", "patch", "lens", "graph")  # groups: the default
            main([alias, "x", "--help"] if grouped else [alias, "--help"])
        assert done.value.code == 0, alias
        assert f"usage: lmscope {entry.words}" in capsys.readouterr().out, alias
        assert chosen(canonical([alias])) is entry


def test_errors_name_the_command_as_typed_in_groups(tmp_path, capsys):
    assert main(["sae", "eval", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("lmscope sae eval: error:")
