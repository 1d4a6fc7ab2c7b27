"""``lmscope neurons --image`` end to end: on a LLaVA assembled from tiny folders (the projector's fixture), and one
clear error for bad images or a model without a vision tower."""

import torch

import lmscope
from lmscope.data.images import render, shape_concepts
from lmscope.model.vlm import build_llava
from tests.methods.projector import fixtures

folders = fixtures.folders  # the projector tests' fixture, used here by name


def _fixed_caption(model, words: list[str], tok):
    """Make ``model.generate`` append these words (one token each) whatever the image."""
    ids = tok.convert_tokens_to_ids(words)

    def generate(input_ids=None, **_):
        return torch.cat([input_ids, torch.tensor([ids] * input_ids.shape[0])], 1)
    model.generate = generate


def test_neurons_of_an_image_end_to_end(folders, tmp_path, capsys, monkeypatch):
    import lmscope.cli.registry as registry
    from lmscope.cli import main

    text, vision = folders
    model, processor = build_llava(text, vision, image_size=28, image_token="w50")
    folder = tmp_path / "vlm"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    render(shape_concepts()[2], 28, 0).save(tmp_path / "img.png")
    real_load = lmscope.load

    def load(*a, **k):
        lm = real_load(*a, **k)
        _fixed_caption(lm.model, ["the", "capital", "Paris", "w3"], lm.tokenizer)
        return lm
    monkeypatch.setattr(registry, "load", load)
    out = tmp_path / "n"
    assert main(["--model", str(folder), "neurons", "--image", str(tmp_path / "img.png"), "--top-k", "3",
                 "--out", str(out)]) == 0
    res = lmscope.load_result(out / "result")
    assert [t for t in res.targets] == ["capital", "Paris"] and res.grid == [2, 2]
    assert res.patch_acts.shape == (2, 3, 4) and (out / "patches-1.png").is_file()
    assert res.image_acts.shape == (2, 3, 4) and res.top_image[0] != res.top[0]  # the maps: ranked over the patches
    occ = lmscope.load_result(out / "occlusion-1")
    assert len(occ.drops()) > 0 and 0 <= occ.prob_blank <= 1  # each map checked by occlusion, a blank image beside
    said = capsys.readouterr().out
    assert "caption" in said and "brightest patches covered" in said and "blank image P" in said


def test_bad_images_are_one_clear_error(tiny_llama_dir, tmp_path, capsys):
    from lmscope.cli import main

    (tmp_path / "not.png").write_text("hello")
    render(shape_concepts()[0], 28, 0).save(tmp_path / "ok.png")
    for path, message in ((tmp_path / "none.png", "no image at"), (tmp_path / "not.png", "not an image"),
                          (tmp_path / "ok.png", "no vision tower")):
        assert main(["--model", str(tiny_llama_dir), "neurons", "--image", str(path), "--out",
                     str(tmp_path / "o")]) == 2
        assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_train_projector_end_to_end_on_the_device_asked(folders, tmp_path, capsys, monkeypatch):
    """The command trains on ``--device`` (the model is moved there), saves the projector and a loadable result."""
    import lmscope.cli.projector as command
    from lmscope.cli import main

    text, vision = folders
    moved = []

    def build(_text, _vision, projector, image_size, image_token):
        model, processor = build_llava(text, vision, projector, 28, "w50")
        real_to = model.to
        model.to = lambda device: moved.append(str(device)) or real_to(device)
        return model, processor

    monkeypatch.setattr(command, "build_llava", build)
    monkeypatch.setattr(command, "ensure_converted", lambda entry: text)
    monkeypatch.setattr(command, "dinov2_folder", lambda: vision)
    monkeypatch.setattr(command, "emoji_font", lambda: None)
    monkeypatch.setattr(command, "emoji_concepts", lambda font: [])
    out = tmp_path / "p"
    assert main(["--device", "cpu", "vlm", "train-projector", "--projector", "mlp", "--image-size", "28", "--prompt",
                 "w50 a", "--image-token", "w50", "--epochs", "1", "--batch-size", "8", "--max-concepts", "8",
                 "--eval-seen", "2", "--max-new-tokens", "2", "--out", str(out)]) == 0
    assert moved == ["cpu"] and (out / "projector.safetensors").is_file()
    res = lmscope.load_result(out / "result")
    assert res.train_concepts == 8 and len(res.losses) == 1 and res.seconds > 0 and res.config.projector == "mlp"
    assert "steps in" in capsys.readouterr().out
