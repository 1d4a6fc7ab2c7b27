"""``lmscope stages`` and ``lmscope lesion`` end to end on a tiny local model folder."""

import json

from lmscope.cli import main
from tests.methods.stages.fixtures import PROMPT


def test_stages_and_lesion_cli(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "stages"
    assert main(["--model", str(tiny_llama_dir), "stages", "--tokens", "64", "--seq-len", "16", "--batch-size", "2",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "stages.json").read_text())
    assert summary["delete_rel_acc"] is None and "undefined" in summary["notes"][0]  # a random model is never right
    assert len(summary["delete_kl"]) == 3 and (out / "report.html").stat().st_size > 5000
    assert {p.name for p in out.glob("*.png")} == {"summary.png", "lesions.png", "curves.png"}
    assert main(["--model", str(tiny_llama_dir), "lesion", PROMPT, "--layer", "1", "--mode", "swap"]) == 0
    assert "blocks 1, 2 swapped" in capsys.readouterr().out
    assert main(["--model", str(tiny_llama_dir), "lesion", PROMPT, "--layer", "2", "--mode", "swap"]) == 2
    err = capsys.readouterr().err
    assert "cannot swap block 2: it is the last block" in err and "layer 3" not in err
