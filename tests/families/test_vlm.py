"""Vision-language models (LLaVA and kin) wrap unmodified: the decoder's spec, bit-identical logits, sites."""

import pytest
import torch
import transformers as T

import lmscope
from lmscope.model.sites import Site
from tests.helpers import TINY_CONFIGS, tiny_tokenizer

IMAGE_TOKEN = 50  # an id of the tiny vocabulary used as the image placeholder


def tiny_llava(text_family: str = "llama", seed: int = 0) -> T.LlavaForConditionalGeneration:
    """A tiny random LLaVA: a 2-layer CLIP vision tower on 28 x 28 images (16 patches), a 2-layer MLP projector."""
    vision = T.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                image_size=28, patch_size=7, projection_dim=16)
    cfg = T.LlavaConfig(vision_config=vision, text_config=TINY_CONFIGS[text_family](), image_token_id=IMAGE_TOKEN)
    torch.manual_seed(seed)
    return T.LlavaForConditionalGeneration(cfg).eval()


def inputs(batch: int = 1) -> dict:
    ids = torch.tensor([[1] + [IMAGE_TOKEN] * 16 + [4, 5, 6]] * batch)
    return {"input_ids": ids, "pixel_values": torch.randn(batch, 3, 28, 28, generator=torch.Generator().manual_seed(0))}


def test_llava_decoder_spec_and_bit_identical_logits():
    model = tiny_llava()
    lm = lmscope.load((model, tiny_tokenizer()))
    assert lm.layout.spec.name == "llava:llama" and lm.layout.spec.blocks == "model.language_model.layers"
    assert (lm.n_layers, lm.d_model, lm.d_mlp) == (3, 32, 48)
    x = inputs(2)
    assert torch.equal(lm(x), model(**x).logits)
    _, cache = lm.run_with_cache(x, [Site(1, "mlp_key"), Site(2, "resid_post")])
    assert cache[Site(1, "mlp_key")].shape == (2, 20, 48) and cache[Site(2, "resid_post")].shape == (2, 20, 32)
    assert torch.equal(lm(x), model(**x).logits)  # hooks removed


def test_llava_with_another_decoder_family():
    model = tiny_llava("gemma2")
    lm = lmscope.load((model, tiny_tokenizer()))
    assert lm.layout.spec.name == "llava:gemma2" and lm.layout.spec.logit_softcap == "final_logit_softcapping"
    x = inputs(1)
    assert torch.equal(lm(x), model(**x).logits)


def test_image_neurons_on_a_tiny_llava():
    """Gradient x activation sums over the image tokens; patch maps are the top neurons' activations there."""
    from lmscope.methods.neurons import NeuronConfig
    from lmscope.methods.neurons.vision import find_image_neurons

    lm = lmscope.load((tiny_llava(), tiny_tokenizer()))
    x = inputs(1)
    res = find_image_neurons(lm, x, config=NeuronConfig(top_k=3))
    assert res.grid == [4, 4] and res.patch_acts.shape == (1, 3, 16) and res.image_acts.shape == (1, 3, 16)
    _, cache = lm.run_with_cache(x, [Site(t["layer"], "mlp_key") for t in res.top[0]])
    first = res.top[0][0]
    key = cache[Site(first["layer"], "mlp_key")][0, 1:17, first["neuron"]]  # the 16 image tokens
    assert torch.allclose(res.patch_map(0, 0).flatten(), key)
    assert res.target_ids[0] == int(lm(x)[0, -1].argmax())
    tokenizer = lm.tokenizer
    image = tokenizer.decode([IMAGE_TOKEN])  # an ordinary word of the tiny vocabulary, shown as <image>
    assert res.prompts[0] == tokenizer.decode([1, IMAGE_TOKEN, 4, 5, 6]).replace(image, "<image>")  # 16 tokens, once
    from lmscope.methods.neurons.vision import shown_prompt
    two = shown_prompt(lm, torch.tensor([7, IMAGE_TOKEN, IMAGE_TOKEN, 8, IMAGE_TOKEN]),
                       torch.tensor([False, True, True, False, True]))
    assert two == tokenizer.decode([7, IMAGE_TOKEN, 8, IMAGE_TOKEN]).replace(image, "<image>")
    assert two.count("<image>") == 2 and res.prompts[0].count("<image>") == 1


def test_an_image_on_a_text_model_is_one_clear_error():
    import pytest

    from lmscope.errors import InputError
    from lmscope.methods.neurons.vision import find_image_neurons
    from tests.helpers import tiny_lm

    with pytest.raises(InputError, match="no vision tower"):
        find_image_neurons(tiny_lm("llama"), {"input_ids": torch.tensor([[1, 4, 5]])})
    lm = lmscope.load((tiny_llava(), tiny_tokenizer()))
    with pytest.raises(InputError, match="no image tokens"):
        find_image_neurons(lm, {"input_ids": torch.tensor([[1, 4, 5]])})


def test_causal_checks_take_image_inputs():
    """Ablation and sensitivity on image + text inputs (one row each), found by the image-neuron scores."""
    from lmscope.methods.neurons import AblationConfig, NeuronConfig, ablate_neurons, sensitivity
    from lmscope.methods.neurons.vision import find_image_neurons

    lm = lmscope.load((tiny_llava(), tiny_tokenizer()))
    x = inputs(1)
    res = find_image_neurons(lm, x, config=NeuronConfig(top_k=3))
    ab = ablate_neurons(lm, res, AblationConfig(random_sets=2, new_tokens=2), inputs=[x])
    assert ab.random_after.shape == (1, 2) and ab.prob_before[0] == pytest.approx(res.target_prob[0], rel=1e-5)
    other = {"input_ids": x["input_ids"], "pixel_values": torch.zeros_like(x["pixel_values"])}
    sens = sensitivity(lm, [[t["layer"], t["neuron"]] for t in res.top[0]], [x], [other, "The capital of"])
    assert sens.same.shape == (1, 3) and sens.other.shape == (2, 3) and sens.other_prompts[1] == "The capital of"


def test_sensitivity_at_the_image_tokens_reads_each_neurons_peak_over_the_patches(tmp_path):
    """site='image': the key's maximum over the image positions, against brute force; text alone is one error."""
    from lmscope.errors import InputError
    from lmscope.methods.neurons import sensitivity

    lm = lmscope.load((tiny_llava(), tiny_tokenizer()))
    x, blank = inputs(1), inputs(1)
    blank["pixel_values"] = torch.zeros_like(blank["pixel_values"])
    neurons = [[0, 3], [1, 5], [1, 0]]
    sens = sensitivity(lm, neurons, [x], [blank], quantile=0.5, site="image")
    mask = x["input_ids"][0] == lm.model.config.image_token_id
    for i, (layer, n) in enumerate(neurons):
        for acts, row in ((sens.same, x), (sens.other, blank)):
            _, cache = lm.run_with_cache(row, [Site(layer, "mlp_key")])
            keys = cache[Site(layer, "mlp_key")][0, mask]  # (image tokens, d_mlp)
            assert float(acts[0, i]) == pytest.approx(float(keys[:, n].max()), abs=1e-6)
    last = sensitivity(lm, neurons, [x], [blank], quantile=0.5)
    assert not torch.allclose(last.same, sens.same) and sens.summary()["site"] == "image"
    sens.save(tmp_path / "s")
    assert lmscope.load_result(tmp_path / "s").site == "image"
    with pytest.raises(InputError, match="image inputs"):
        sensitivity(lm, neurons, [x], ["The capital of"], site="image")
    with pytest.raises(InputError, match="site"):
        sensitivity(lm, neurons, [x], [], site="patch")


def test_image_token_boxes_follow_the_pixels_a_dinov2_tower_is_given():
    """DINOv2 interpolates its position embeddings: the grid is the pixels' (as the bundled 112 x 112 smollm2-dino
    reads with a tower configured for 518), not the config's image_size."""
    from lmscope.model.vlm_layouts import image_token_boxes

    vision = T.Dinov2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                            image_size=56, patch_size=7)
    cfg = T.LlavaConfig(vision_config=vision, text_config=TINY_CONFIGS["llama"](), image_token_id=IMAGE_TOKEN)
    torch.manual_seed(0)
    model = T.LlavaForConditionalGeneration(cfg).eval()
    lm = lmscope.load((model, tiny_tokenizer()))
    x = inputs(1)  # 28 x 28 pixels: 16 patches, where the config's 56 would make 64
    assert torch.equal(lm(x), model(**x).logits)
    (boxes,) = image_token_boxes(lm, x)
    assert boxes.shape == (16, 4) and float(boxes[:, 2].max()) == 28 and float(boxes[:, 3].max()) == 28
