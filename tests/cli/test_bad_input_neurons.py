"""Bad input to ``neurons find`` (text and ``--image``) and ``vlm train-projector``: one line, exit 2, refused before
the model loads, and nothing silently wrong (issue 25: images, caption tokens, the ablation's control, the
projector's prompt, multi-token targets)."""

from __future__ import annotations

import json
import logging
import struct
import zlib

import pytest

import lmscope.cli.projector as projector_cli
import lmscope.cli.registry as registry
from lmscope.cli import main
from lmscope.data.images import render, shape_concepts


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, width: int, height: int, rows: bool = True):
    """A black 1-bit PNG of ``width`` x ``height`` (``rows=False``: the header only, a "decompression bomb")."""
    data = zlib.compress(bytes((1 + (width + 7) // 8) * height), 9) if rows else zlib.compress(b"")
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if any model loads (the input should be refused before)."""
    def refuse(*_, **__):
        raise AssertionError("the model loaded before the bad input was refused")
    monkeypatch.setattr(registry, "load", refuse)
    monkeypatch.setattr(projector_cli, "build_llava", refuse)
    monkeypatch.setattr(projector_cli, "ensure_converted", refuse)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "ok.png"
    render(shape_concepts()[0], 28, 0).save(path)
    return path


def refused(argv: list[str], capsys, out) -> str:
    """Run ``argv`` with ``--out out``: exit 2, no traceback, nothing left in ``out``; returns the last stderr line."""
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "Warning" not in err, err
    assert not out.exists()
    return err.splitlines()[-1]


# -- images -----------------------------------------------------------------------------------------------------------

def test_a_png_header_bomb_is_one_line_naming_its_size_and_the_limit(tiny_llama_dir, tmp_path, capsys, no_model):
    bomb = write_png(tmp_path / "bomb.png", 20_000, 20_000, rows=False)
    line = refused(["--model", str(tiny_llama_dir), "neurons", "find", "--image", str(bomb)], capsys, tmp_path / "o")
    assert "20,000 x 20,000" in line and "50,000,000" in line and "scale it down" in line


def test_a_large_valid_png_is_refused_before_it_is_decoded(tiny_llama_dir, tmp_path, capsys, no_model):
    big = write_png(tmp_path / "big.png", 13_000, 13_000)  # valid; decoded whole it takes ~0.7 GB
    line = refused(["--model", str(tiny_llama_dir), "neurons", "find", "--image", str(big)], capsys, tmp_path / "o")
    assert "13,000 x 13,000" in line and "169,000,000" in line and "50,000,000" in line


def test_a_jpeg_is_reduced_while_it_is_decoded_and_a_png_is_refused_above_the_limit(tmp_path):
    from PIL import Image

    from lmscope.data.images import read_image
    from lmscope.errors import InputError

    Image.new("RGB", (400, 300), (200, 30, 30)).save(tmp_path / "a.jpg")
    Image.new("RGB", (400, 300), (200, 30, 30)).save(tmp_path / "a.png")
    small = read_image(tmp_path / "a.jpg", max_pixels=40_000, draft_side=100)  # 400 x 300 > 40,000 pixels...
    assert small.size == (200, 150) and small.mode == "RGB"  # ...but decoded at half the size
    assert read_image(tmp_path / "a.jpg").size == (400, 300)  # small images are read whole
    with pytest.raises(InputError, match=r"a.png is 400 x 300 pixels \(120,000\); at most 40,000"):
        read_image(tmp_path / "a.png", max_pixels=40_000, draft_side=100)  # PNG: no reduced decoding
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        read_image(tmp_path / "folder.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:200])
    with pytest.raises(InputError, match="not an image Pillow can read"):
        read_image(tmp_path / "cut.png")


# -- neurons find -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tokens", ["0", "-3", "100000"])
def test_caption_tokens_out_of_bounds_are_refused_before_the_model_loads(tokens, tiny_llama_dir, image, tmp_path,
                                                                         capsys, no_model):
    line = refused(["--model", str(tiny_llama_dir), "neurons", "find", "--image", str(image), "--caption-tokens",
                    tokens], capsys, tmp_path / "o")
    assert f"caption-tokens must be in 1..64, got {tokens}" in line


@pytest.mark.parametrize("extra, flag", [(["--target", "Paris"], "--target"), (["--ablate"], "--ablate"),
                                         (["--same", "a"], "--same"), (["--other", "a"], "--other")])
def test_text_only_options_with_an_image_are_refused_not_ignored(extra, flag, tiny_llama_dir, image, tmp_path, capsys,
                                                                 no_model):
    line = refused(["--model", str(tiny_llama_dir), "neurons", "find", "--image", str(image), *extra], capsys,
                   tmp_path / "o")
    assert flag in line and "--image" in line


def test_ablation_without_random_sets_is_refused_the_control_needs_one(tiny_llama_dir, tmp_path, capsys, no_model):
    line = refused(["--model", str(tiny_llama_dir), "neurons", "find", "The capital of France is", "--ablate",
                    "--random-sets", "0"], capsys, tmp_path / "o")
    assert "random-sets" in line and "at least one" in line and "control" in line


def test_one_random_set_prints_and_writes_no_nan(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "n"
    assert main(["--model", str(tiny_llama_dir), "neurons", "find", "The capital of France is", "--target", "Paris",
                 "--top-k", "2", "--ablate", "--random-sets", "1", "--new-tokens", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "nan" not in text.lower() and "random set:" in text
    summary = json.loads((out / "ablation" / "ablation.json").read_text())
    assert summary["random_prob_drop_std"] is None  # one value has no spread: null, not NaN


def test_other_prompts_alone_print_no_nan_sensitivity(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "n"
    assert main(["--model", str(tiny_llama_dir), "neurons", "find", "The capital of France is", "--top-k", "2",
                 "--other", "Eiffel Tower is located in", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "nan" not in text.lower() and "specificity" in text and "sensitivity " not in text
    summary = json.loads((out / "sensitivity" / "sensitivity.json").read_text())
    assert summary["sensitivity"] is None and 0 <= summary["specificity"] <= 1


def test_one_scoring_method_writes_null_agreement_not_nan(tiny_llama_dir, tmp_path):
    out = tmp_path / "n"
    assert main(["--model", str(tiny_llama_dir), "neurons", "find", "The capital of France is", "--top-k", "2",
                 "--method", "contribution", "--out", str(out)]) == 0
    summary = json.loads((out / "neurons.json").read_text())
    assert summary["prompts"][0]["spearman"] is None and summary["prompts"][0]["top_k_overlap"] is None


def test_a_multi_token_target_is_a_logged_warning_and_a_note(tiny_llama_dir, tmp_path, caplog):
    out = tmp_path / "n"
    with caplog.at_level(logging.WARNING, logger="lmscope"):
        assert main(["--model", str(tiny_llama_dir), "neurons", "find", "The capital of", "--target", "Paris France",
                     "--top-k", "2", "--out", str(out)]) == 0
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "2 tokens" in r.getMessage()]
    assert warned and "scoring its first, 'Paris'" in warned[0].getMessage()
    assert any("2 tokens" in n for n in json.loads((out / "neurons.json").read_text())["notes"])


# -- vlm train-projector ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["no image token here", "<empty_output> <empty_output> A picture of"])
def test_a_projector_prompt_needs_the_image_token_once_before_anything_loads(prompt, tmp_path, capsys, no_model):
    line = refused(["vlm", "train-projector", "--prompt", prompt], capsys, tmp_path / "o")
    assert "'<empty_output>'" in line and "exactly once" in line
