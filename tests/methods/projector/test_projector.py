"""The bundled VLM's parts on tiny models: images drawn offline, a LLaVA assembled from two folders, projector
training that resumes, a bundled VLM assembled once (the CLI: tests/cli/test_projector_cli.py)."""

import pytest
import torch
import transformers as T

import lmscope
from lmscope.data.images import EMOJI_FONTS, Concept, emoji_concepts, emoji_font, render, shape_concepts
from lmscope.errors import AssetError, ConfigError
from lmscope.io import load_tensors
from lmscope.methods.projector import ProjectorConfig, train_projector
from lmscope.methods.projector import train as projector_train
from lmscope.methods.projector.train import (
    caption_batch,
    caption_loss,
    embed_with_images,
    first_word_tv,
    lr_factor,
    names_concept,
    subset,
)
from lmscope.model.vlm import build_llava


def test_shapes_render_from_a_seed():
    concepts = shape_concepts()
    assert len(concepts) == 32 and concepts[0].caption == "a red circle"
    a, b = render(concepts[5], 56, seed=3), render(concepts[5], 56, seed=3)
    assert a.size == (56, 56) and a.tobytes() == b.tobytes()
    assert render(concepts[5], 56, seed=4).tobytes() != a.tobytes()
    assert render(concepts[5], 56, seed=3, rotation=0).tobytes() == a.tobytes()  # no angle drawn: as before


def test_rotated_renderings_turn_the_object_and_keep_the_background():
    square = next(c for c in shape_concepts() if c.key == "blue square")
    flat, turned = render(square, 56, seed=2), render(square, 56, seed=2, rotation=45)
    assert turned.size == flat.size and turned.getpixel((0, 0)) == flat.getpixel((0, 0))  # same background draw
    assert turned.tobytes() != flat.tobytes()
    blue = [sum(1 for p in im.getdata() if p[2] > 150 and p[0] < 100) for im in (flat, turned)]
    assert 0 < blue[1] < blue[0]  # a turned square fits its box smaller, corners in
    assert render(square, 56, seed=2, rotation=45).tobytes() == turned.tobytes()  # seeded


@pytest.mark.skipif(not any(p.is_file() for p in EMOJI_FONTS),
                    reason="Debian's fonts-noto-color-emoji is not installed (.ci/run installs it)")
def test_emoji_concepts_and_render():
    font = emoji_font()
    concepts = emoji_concepts(font)
    assert len(concepts) > 1000 and any(c.caption == "a red apple" for c in concepts)
    image = render(next(c for c in concepts if c.caption == "a red apple"), 112, seed=0, font=font)
    r, g, b = image.convert("RGB").resize((1, 1)).getpixel((0, 0))
    assert r > g and r > b  # mostly red on a light background


def test_missing_emoji_font_is_one_clear_error(tmp_path):
    with pytest.raises(AssetError, match="fonts-noto-color-emoji"):
        emoji_font(tmp_path / "none.ttf")


def test_build_llava_keeps_the_text_model_bit_for_bit(folders):
    text, vision = folders
    model, processor = build_llava(text, vision, image_size=28, image_token="w50")
    ids = torch.tensor([[1, 4, 5, 6]])
    ref = T.AutoModelForCausalLM.from_pretrained(text).eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, ref(ids).logits)
    x = processor(images=render(shape_concepts()[0], 28, 0), text="w50 a", return_tensors="pt")
    assert int((x["input_ids"] == model.config.image_token_id).sum()) == 4  # 2 x 2 patches
    lm = lmscope.load((model, processor.tokenizer))
    assert lm.layout.spec.name == "llava:llama" and lm(x).shape[1] == x["input_ids"].shape[1]
    with pytest.raises(ConfigError, match="projector"):
        build_llava(text, vision, projector="transformer")


def test_projector_training_lowers_the_loss_and_resumes(folders, tmp_path):
    text, vision = folders
    cfg = ProjectorConfig(image_size=28, prompt="w50 a", image_token="w50", epochs=3, batch_size=4, lr=1e-2,
                          warmup_steps=0, heldout_fraction=0.25, max_new_tokens=2, eval_seen=0)
    concepts = shape_concepts()[:8]
    model, processor = build_llava(text, vision, image_size=28, image_token="w50")
    before = [p.clone() for p in model.model.language_model.parameters()]
    res = train_projector(model, processor, concepts, cfg, out=tmp_path / "ck")
    assert len(res.losses) == 3 * 2 and res.train_concepts == 6
    assert all(torch.equal(a, b) for a, b in zip(before, model.model.language_model.parameters()))  # LM frozen
    s = res.summary()
    assert s["seen"]["images"] == 6 and s["unseen"]["images"] == 2
    assert 0 <= s["seen"]["named"] <= 1 and s["first_word_tv"] is not None and s["noun_tv"] is not None
    again, processor = build_llava(text, vision, image_size=28, image_token="w50")
    resumed = train_projector(again, processor, concepts, cfg, out=tmp_path / "ck")
    assert resumed.losses == res.losses
    for a, b in zip(model.model.multi_modal_projector.parameters(), again.model.multi_modal_projector.parameters()):
        assert torch.equal(a, b)


def test_a_projector_trained_on_a_few_concepts_is_evaluated_on_those(folders):
    text, vision = folders
    cfg = ProjectorConfig(image_size=28, prompt="w50 a", image_token="w50", epochs=1, batch_size=4, warmup_steps=0,
                          heldout_fraction=0.25, max_new_tokens=2, eval_seen=0, max_concepts=3)
    model, processor = build_llava(text, vision, image_size=28, image_token="w50")
    res = train_projector(model, processor, shape_concepts()[:8], cfg)
    s = res.summary()
    assert res.train_concepts == 3 and s["seen"]["images"] == 3 and s["unseen"]["images"] == 2
    assert len(res.losses) == 1  # one step of 3 captions


def test_a_concept_subset_is_drawn_across_the_list_not_its_first_theme():
    concepts = [Concept("shape", str(i), f"a thing {i}") for i in range(100)]
    picked = subset(concepts, 10, seed=0)
    assert len(picked) == 10 and picked == subset(concepts, 10, seed=0)
    assert picked != concepts[:10] and picked != subset(concepts, 10, seed=1)
    assert [concepts.index(c) for c in picked] == sorted(concepts.index(c) for c in picked)  # their order kept
    assert subset(concepts, 0, 0) == concepts and subset(concepts, 500, 0) == concepts


def test_the_learning_rate_warms_up_then_follows_a_cosine_to_zero_or_stays():
    cfg = ProjectorConfig(warmup_steps=10)
    assert lr_factor(0, 110, cfg) == pytest.approx(0.1) and lr_factor(9, 110, cfg) == 1.0
    assert lr_factor(10, 110, cfg) == 1.0 and lr_factor(60, 110, cfg) == pytest.approx(0.5)
    assert lr_factor(109, 110, cfg) < 1e-3
    flat = ProjectorConfig(warmup_steps=10, schedule="constant")
    assert lr_factor(0, 110, flat) == pytest.approx(0.1) and lr_factor(109, 110, flat) == 1.0
    with pytest.raises(ConfigError, match="schedule"):
        ProjectorConfig(schedule="linear")


def test_a_run_stopped_after_an_epoch_resumes_where_it_stopped(folders, tmp_path, monkeypatch):
    """The cosine schedule, the optimiser and the renderings continue exactly: the same losses and weights."""
    text, vision = folders
    cfg = ProjectorConfig(image_size=28, prompt="w50 a", image_token="w50", epochs=3, batch_size=4, lr=1e-2,
                          warmup_steps=2, heldout_fraction=0.25, max_new_tokens=2, eval_seen=1)
    concepts = shape_concepts()[:8]
    whole, processor = build_llava(text, vision, image_size=28, image_token="w50")
    ref = train_projector(whole, processor, concepts, cfg, out=tmp_path / "whole")
    real = projector_train._checkpoint

    def stop_after_first(*args):
        real(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(projector_train, "_checkpoint", stop_after_first)
    model, processor = build_llava(text, vision, image_size=28, image_token="w50")
    with pytest.raises(KeyboardInterrupt):
        train_projector(model, processor, concepts, cfg, out=tmp_path / "cut")
    monkeypatch.setattr(projector_train, "_checkpoint", real)
    model, processor = build_llava(text, vision, image_size=28, image_token="w50")
    resumed = train_projector(model, processor, concepts, cfg, out=tmp_path / "cut")
    assert resumed.losses == pytest.approx(ref.losses, abs=1e-6) and len(ref.losses) == 6
    assert resumed.seconds > 0 and resumed.summary()["seconds"] == resumed.seconds
    for a, b in zip(whole.model.multi_modal_projector.parameters(), model.model.multi_modal_projector.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_the_caption_loss_is_the_models_own_at_the_caption_positions(folders):
    text, vision = folders
    model, processor = build_llava(text, vision, image_size=28, image_token="w50", projector="mlp")
    cfg = ProjectorConfig(image_size=28, prompt="w50 a", image_token="w50")
    batch = caption_batch(model, processor, ["a red circle", "a star"], cfg, 4)  # rows of two lengths: padded
    feats = torch.randn(2, 4, model.config.vision_config.hidden_size)
    embeds = embed_with_images(model, batch["input_ids"], feats)
    mine = caption_loss(model, embeds, batch["attention_mask"], batch["labels"])
    theirs = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert mine.item() == pytest.approx(theirs.item(), rel=1e-5)
    grads = torch.autograd.grad(mine, model.model.multi_modal_projector.linear_1.weight)[0]
    assert grads.abs().sum() > 0  # it reaches the projector


def test_a_caption_names_its_concept_by_a_noun():
    apple, dog, circle = (Concept("emoji", "x", "a red apple"), Concept("emoji", "y", "a dog face"),
                          Concept("shape", "red circle", "a red circle"))
    assert names_concept(apple, "an apple on a table") and names_concept(dog, "a dog.")
    assert not names_concept(apple, "a red hat")  # the colour alone does not name it
    assert not names_concept(dog, "a face with a smile")  # nor a generic word
    assert names_concept(circle, "a blue circle") and not names_concept(circle, "a red square")


def test_first_word_tv_is_zero_for_the_same_image_and_positive_for_different_ones(folders):
    text, vision = folders
    model, processor = build_llava(text, vision, image_size=28, image_token="w50", projector="mlp")
    cfg = ProjectorConfig(image_size=28, prompt="w50 a", image_token="w50")
    same = [render(shape_concepts()[0], 28, 1)] * 3
    assert first_word_tv(model, processor, same, cfg) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        model.model.multi_modal_projector.linear_2.weight.mul_(50)  # the image moves the next token
    other = [render(c, 28, 1) for c in shape_concepts()[:3]]
    tv = first_word_tv(model, processor, other, cfg, batch=2)  # two chunks
    assert 0 < tv <= 1
    after = first_word_tv(model, processor, other, cfg, suffix=" w1")  # another position: another distribution
    assert 0 < after <= 1 and after != pytest.approx(tv)


def test_a_saved_llava_folder_loads_with_its_processor(folders, tmp_path):
    text, vision = folders
    model, processor = build_llava(text, vision, image_size=28, image_token="w50")
    folder = tmp_path / "vlm"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    lm = lmscope.load(str(folder))
    assert lm.processor is not None and lm.layout.spec.name == "llava:llama"
    x = lm.processor(images=render(shape_concepts()[1], 28, 0), text="w50 a", return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(lm(x), model(**x).logits)


def test_a_bundled_vlm_is_assembled_once_from_its_parts(folders, tmp_path, monkeypatch):
    from lmscope.io import save_tensors
    from lmscope.model import loading
    from lmscope.model.loading import BundledVLM

    text, vision = folders
    monkeypatch.setenv("LMSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "ASSETS", tmp_path / "assets")
    monkeypatch.setattr(loading, "ensure_converted", lambda entry, verify=False: text)
    monkeypatch.setattr("lmscope.model.vision.dinov2_folder", lambda: vision)
    entry = BundledVLM("tiny-vlm", "a tiny test VLM", "smollm2-135m", "tiny-projector.safetensors", image_size=28,
                       image_token="w50")
    monkeypatch.setitem(loading.VLM_REGISTRY, "tiny-vlm", entry)
    with pytest.raises(AssetError, match="train-projector"):
        lmscope.load("tiny-vlm")
    trained, _ = build_llava(text, vision, image_size=28, image_token="w50")
    (tmp_path / "assets").mkdir()
    save_tensors(tmp_path / "assets" / "tiny-projector.safetensors",
                 dict(trained.model.multi_modal_projector.state_dict()))
    lm = lmscope.load("tiny-vlm")
    assert lm.processor is not None and lm.name == "tiny-vlm"
    ours, want = lm.model.model.multi_modal_projector, trained.model.multi_modal_projector
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), want.parameters()))
    assert lmscope.load("tiny-vlm").layout.spec.name == "llava:llama"  # the cached folder, no rebuild
    saved = load_tensors(entry.assembled_dir() / "model.safetensors")  # no second copy of the decoder's weights
    assert saved and not [k for k in saved if k.startswith(("model.language_model.", "lm_head."))]
    decoder = T.AutoModelForCausalLM.from_pretrained(text)
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():  # the decoder filled in from the text model's own folder, also when loaded by path
        assert torch.equal(lm.model(input_ids=ids).logits, decoder(ids).logits)
        by_path = lmscope.load(str(entry.assembled_dir()))
        assert torch.equal(by_path.model(input_ids=ids).logits, decoder(ids).logits)
