"""Neuron figures: patch maps on one colour scale at the image's own aspect ratio, titled with the neuron, its score,
the caption and the text fed before the word; report heat maps of a bounded width; no NumPy warnings."""

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

import lmscope
from lmscope.methods.neurons import NeuronConfig, OcclusionConfig, find_neurons, occlusion_check
from lmscope.methods.neurons.vision import find_image_neurons
from lmscope.model.vlm_layouts import image_token_layout
from lmscope.viz.lens import show_token
from lmscope.viz.neurons import MAX_TICKS, neurons_figure, neurons_report, patch_figure, token_ticks
from tests.families.test_vlm import inputs, tiny_llava
from tests.helpers import tiny_lm, tiny_tokenizer

WIDE = Image.fromarray((np.random.default_rng(0).random((30, 60, 3)) * 255).astype("uint8"))  # 60 x 30 pixels


@pytest.fixture(scope="module")
def vlm():
    return lmscope.load((tiny_llava(), tiny_tokenizer()))


def panels(fig) -> list:
    """The figure's image panels (every axes but the colour bar's)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


@pytest.mark.parametrize("placed", [False, True])
def test_patch_maps_share_one_scale_keep_the_aspect_ratio_and_say_what_they_show(vlm, placed):
    x = inputs(1)
    res = find_image_neurons(vlm, x, config=NeuronConfig(top_k=3))
    occ = occlusion_check(vlm, x, res, config=OcclusionConfig(maps=3, draws=2))
    layout = image_token_layout(vlm, x)[0] if placed else None
    fig = patch_figure(res, WIDE, neurons=3, layout=layout, caption="w1 w2 w39 w4", occlusion=occ)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and len(panels(fig)) == 4
    maps = [im for ax in panels(fig)[1:] for im in ax.get_images() if im.get_cmap().name == "magma"]
    assert len(maps) == 3 and len({im.get_clim() for im in maps}) == 1
    values = res.image_acts[0, :3].numpy()
    assert maps[0].get_clim() == pytest.approx((values.min(), values.max()), rel=1e-6)
    for ax in panels(fig):
        assert all(im.get_extent() == [0, 60, 30, 0] for im in ax.get_images())  # drawn at 60 x 30, not squashed
        (x0, x1), (y1, y0) = ax.get_xlim(), ax.get_ylim()
        assert x1 - x0 == pytest.approx(y1 - y0) == pytest.approx(60)  # padded to a square
    for ax, top, p in zip(panels(fig)[1:], res.top_image[0], occ.prob_top):
        assert f"L{top['layer']}.{top['neuron']}" in ax.get_title() and f"{top['gradxact']:.3g}" in ax.get_title()
        assert f"{p - occ.prob:+.3f}" in ax.get_title() and f"{-occ.random_drop():+.3f}" in ax.get_title()
    assert f"{occ.prob_blank:.3f}" in panels(fig)[0].get_title()
    title = fig.get_suptitle()
    assert "'w1 w2 w39 w4'" in title and "'<bos> <image> The capital of'" in title and repr(res.targets[0]) in title
    assert "image +" not in title  # the prompt shows where the image is
    plt.close(fig)


def test_no_numpy_warning_when_every_score_is_zero(vlm):
    x = inputs(1)
    res = find_image_neurons(vlm, x, config=NeuronConfig(top_k=3, layers=(vlm.n_layers - 1,)))
    assert all(t["gradxact"] == 0 for t in res.top_image[0])  # the last layer: no path from a patch to the word
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = patch_figure(res, WIDE)
        assert "every score is 0" in fig.get_suptitle()
        neurons_report(res)
        neurons_figure(res)
    plt.close("all")


def test_the_report_lists_the_image_ranking_apart(vlm):
    res = find_image_neurons(vlm, inputs(1), config=NeuronConfig(top_k=2))
    html = neurons_report(res).render()
    assert "gradient x activation summed over the image tokens" in html and "log-probability" in html
    plt.close("all")


def test_token_ticks_label_a_run_once_and_cap_the_count():
    tokens = ["<bos>"] + ["<image>"] * 64 + ["A", " picture", " of", " a"]
    ticks = token_ticks(tokens)
    assert ticks[:2] == [(0, "<bos>"), (1, "<image> x64")] and ticks[-1] == (68, show_token(" a", 10))
    many = [f"t{i}" for i in range(200)]
    capped = token_ticks(many)
    assert len(capped) <= MAX_TICKS and capped[-1] == (199, "t199") and capped[0] == (0, "t0")
    for n in (41, 81, 121):  # the last kept once, even where the stride lands on it
        kept = [i for i, _ in token_ticks(many[:n])]
        assert len(kept) == len(set(kept)) <= MAX_TICKS and kept[-1] == n - 1


def test_the_heat_map_stays_narrow_for_a_long_prompt():
    lm = tiny_lm()
    prompt = " ".join(["the capital of France is Paris"] * 10)  # 60 tokens
    res = find_neurons(lm, prompt, None, NeuronConfig(top_k=2))
    fig = neurons_figure(res)
    assert len(res.tokens[0]) >= 50 and fig.get_size_inches()[0] <= 12.5
    plt.close(fig)
    assert torch.isfinite(res.top_acts).all()
