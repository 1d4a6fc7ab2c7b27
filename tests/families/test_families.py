"""Every supported family on a tiny random config: parity, sites, decomposition, patterns, fallback."""

import functools

import pytest
import torch
import torch.nn.functional as F

import lmscope
from lmscope import FAMILIES, KINDS, FamilySpec, FamilySpecError, ModuleSite, Site, SiteError, capture, zero
from tests.helpers import FAMILY_NAMES, TINY_CONFIGS, tiny_model

IDS = torch.tensor([[5, 17, 3, 44, 9, 60, 7, 21], [1, 2, 3, 4, 5, 6, 7, 8]])  # (batch, pos)


def all_captures(lm):
    return [capture(Site(0, "embed"))] + [capture(Site(layer, k)) for layer in range(lm.n_layers)
                                          for k in KINDS if k != "embed"]


def test_every_family_has_a_tiny_config():
    assert set(FAMILIES) == set(TINY_CONFIGS)


@torch.no_grad()
def test_parity_with_bare_model(family):
    bare = tiny_model(family)
    lm = lmscope.load((tiny_model(family), None))
    impl = lm.config._attn_implementation
    expected = bare(IDS).logits
    assert torch.equal(lm(IDS), expected)
    with lm.hooks(*all_captures(lm)) as cache:  # capturing everything, patterns included, changes nothing
        assert torch.equal(lm(IDS), expected)
    assert len(cache) == 1 + lm.n_layers * (len(KINDS) - 1)
    assert torch.equal(lm(IDS), expected)  # and nothing stays behind
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())
    assert lm.config._attn_implementation == impl


@torch.no_grad()
def test_site_shapes_and_residual_decomposition(family):
    lm = lmscope.load((tiny_model(family), None))
    _, cache = lm.run_with_cache(IDS, [Site(0, "embed")] + [Site(layer, k) for layer in range(lm.n_layers)
                                                            for k in KINDS if k not in ("embed", "attn_pattern")])
    b, p = IDS.shape
    for layer in range(lm.n_layers):
        for kind in ("resid_pre", "resid_post", "attn_out", "mlp_out"):
            assert cache[Site(layer, kind)].shape == (b, p, lm.d_model)
        for kind in ("mlp_key", "mlp_pre"):
            assert cache[Site(layer, kind)].shape == (b, p, lm.d_mlp)
        pre, post = cache[Site(layer, "resid_pre")], cache[Site(layer, "resid_post")]
        summed = pre + cache[Site(layer, "attn_out")] + cache[Site(layer, "mlp_out")]
        assert torch.allclose(summed, post, atol=1e-5), f"h^l != h^(l-1) + a^l + m^l at layer {layer}"
        if layer + 1 < lm.n_layers:
            assert torch.equal(post, cache[Site(layer + 1, "resid_pre")])


@torch.no_grad()
def test_attn_heads_are_the_input_of_the_output_projection_one_head_per_slice(family):
    lm = lmscope.load((tiny_model(family), None))
    site = Site(1, "attn_heads")
    _, cache = lm.run_with_cache(IDS, [site, Site(1, "attn_out")])
    z = cache[site]  # (batch, pos, n_heads * d_head)
    assert z.shape == (*IDS.shape, lm.n_heads * lm.d_head)
    proj = lm.layout.part(1, "attn_out_proj")
    if lm.layout.spec.attn_out is None:  # no post-attention norm: the projection of z is what attention adds
        assert torch.allclose(proj(z), cache[Site(1, "attn_out")], atol=1e-5)
    h, d = 1, lm.d_head
    with lm.hooks(zero(site, positions=[3])):
        all_zero = lm(IDS)
    with lm.hooks(lmscope.apply(site, lambda x: torch.cat([x[..., :h * d], 0 * x[..., h * d:(h + 1) * d],
                                                            x[..., (h + 1) * d:]], -1))):
        one_zero = lm(IDS)
    assert not torch.equal(one_zero, lm(IDS)) and not torch.equal(all_zero, lm(IDS))
    assert torch.equal(lm(IDS)[:, :3], all_zero[:, :3])  # causal: positions before the patch are untouched


@torch.no_grad()
def test_w_out_maps_key_to_mlp_output(family):
    lm = lmscope.load((tiny_model(family), None))
    spec = lm.layout.spec
    layer = 1
    mlp = ModuleSite(f"{spec.blocks}.{layer}.{spec.mlp}")
    _, cache = lm.run_with_cache(IDS, [Site(layer, "mlp_key")], capture(mlp))
    w_out = lm.W_out(layer)
    assert w_out.shape == (lm.d_model, lm.d_mlp)
    bias = getattr(lm.layout.part(layer, "mlp_out_proj"), "bias", None)
    assert torch.allclose(F.linear(cache[Site(layer, "mlp_key")], w_out, bias), cache[mlp], atol=1e-5)
    assert lm.W_in(layer).shape == (lm.d_mlp, lm.d_model)


@torch.no_grad()
def test_mlp_in_is_what_the_mlp_reads(family):
    """mlp_in (a transcoder's input) is the MLP's own input, after the pre-MLP norm: the MLP of it is its output.

    Without a post-MLP norm that output is mlp_out; with one (Gemma 2 / 3) the norm of it is. Changing mlp_in changes
    the block's output (the hook is on the MLP's input, not a copy).
    """
    lm = lmscope.load((tiny_model(family), None))
    spec, layer = lm.layout.spec, 1
    mlp = lm.layout.part(layer, "mlp")
    sites = [Site(layer, "mlp_in"), Site(layer, "mlp_out"), Site(layer, "resid_pre")]
    _, cache = lm.run_with_cache(IDS, sites)
    x = cache[Site(layer, "mlp_in")]
    assert x.shape == (*IDS.shape, lm.d_model)
    assert not torch.equal(x, cache[Site(layer, "resid_pre")])  # normalised: not the residual stream itself
    out = mlp(x)
    if spec.mlp_out is not None:  # a post-MLP norm (sandwich norms)
        out = lm.layout.part(layer, "mlp_out")(out)
    assert torch.allclose(out, cache[Site(layer, "mlp_out")], atol=1e-5)
    assert Site(layer, "mlp_in").tl_name is None  # TransformerLens' ln2.hook_normalized lacks the norm's weight
    with lm.hooks(zero(Site(layer, "mlp_in"), positions=[3])):
        changed = lm(IDS)
    assert not torch.equal(changed, lm(IDS)) and torch.equal(changed[:, :3], lm(IDS)[:, :3])


@torch.no_grad()
def test_unembed_of_last_residual_is_the_output(family):
    lm = lmscope.load((tiny_model(family), None))
    logits, cache = lm.run_with_cache(IDS, [Site(-1, "resid_post")])
    assert torch.allclose(lm.unembed(cache[Site(-1, "resid_post")]), logits, atol=1e-5)


@torch.no_grad()
def test_patterns_under_sdpa_equal_eager_weights(family):
    lm = lmscope.load((tiny_model(family), None))
    eager = lmscope.load((tiny_model(family, attn="eager"), None))
    sites = lm.sites("attn_pattern")
    _, got = lm.run_with_cache(IDS, sites)
    _, want = eager.run_with_cache(IDS, sites)
    for site in sites:
        pattern = got[site]
        assert pattern.shape == (2, lm.config.num_attention_heads, IDS.shape[1], IDS.shape[1])
        assert torch.allclose(pattern, want[site], atol=1e-6)
        assert torch.allclose(pattern.sum(-1), torch.ones(pattern.shape[:-1]), atol=1e-5)
        assert torch.all(pattern.triu(1) == 0)  # causal


@torch.no_grad()
def test_patterns_with_padding_mask(family):
    lm = lmscope.load((tiny_model(family), None))
    eager = lmscope.load((tiny_model(family, attn="eager"), None))
    mask = torch.ones_like(IDS)
    mask[1, -3:] = 0  # right padding on row 1
    inputs = {"input_ids": IDS, "attention_mask": mask}
    _, got = lm.run_with_cache(inputs, [Site(1, "attn_pattern")])
    _, want = eager.run_with_cache(inputs, [Site(1, "attn_pattern")])
    real = got[Site(1, "attn_pattern")][:, :, :5]  # queries that are real tokens
    assert torch.allclose(real, want[Site(1, "attn_pattern")][:, :, :5], atol=1e-6)


@torch.no_grad()
def test_interventions_change_and_restore(family):
    lm = lmscope.load((tiny_model(family), None))
    base = lm(IDS)
    with lm.hooks(zero(Site(1, "mlp_out"), positions=[-1])):
        ablated = lm(IDS)
    assert torch.equal(ablated[:, :-1], base[:, :-1])  # causal: earlier positions untouched
    assert not torch.allclose(ablated[:, -1], base[:, -1])
    assert torch.equal(lm(IDS), base)


@torch.no_grad()
def test_stop_after_returns_early(family):
    lm = lmscope.load((tiny_model(family), None))
    logits, cache = lm.run_with_cache(IDS, [Site(0, "resid_post")], stop_after=Site(0, "resid_post"))
    assert logits is None and cache[Site(0, "resid_post")].shape == (2, 8, lm.d_model)


def test_layer_out_of_range_and_negative():
    lm = lmscope.load((tiny_model("llama"), None))
    with pytest.raises(SiteError, match="out of range.*3 layers"):
        lm.hook_point(Site(3, "resid_post"))
    assert lm.check(Site(-1, "mlp_out")) == Site(2, "mlp_out")
    with pytest.raises(SiteError, match="unknown site kind"):
        Site(0, "residual")
    with pytest.raises(SiteError, match="only layer 0"):
        Site(2, "embed")


@pytest.mark.parametrize("family", [f for f in FAMILY_NAMES if not f.startswith("gemma2") and f != "gemma3_text"])
def test_structural_fallback_matches_spec(family):
    model = tiny_model(family)
    inferred = lmscope.infer_spec(model)
    spec = FAMILIES[family]
    for field in ("embed", "blocks", "final_norm", "unembed", "attn", "mlp", "mlp_in", "mlp_out_proj", "mlp_up"):
        assert getattr(inferred, field) == getattr(spec, field), field


@pytest.mark.parametrize("family", ["gemma2", "gemma3_text"])
def test_structural_fallback_refuses_sandwich_norms(family):
    with pytest.raises(FamilySpecError, match="attn_out"):
        lmscope.infer_spec(tiny_model(family))


def test_unknown_model_type_uses_fallback_loudly(caplog):
    model = tiny_model("llama")
    model.config.model_type = "my_llama_variant"
    lm = lmscope.load((model, None))
    assert lm.layout.spec.name == "inferred:my_llama_variant"
    assert "no family spec" in caplog.text


def test_bad_spec_names_the_field():
    bad = FAMILIES["llama"].replace(mlp_out_proj="mlp.w2")
    with pytest.raises(FamilySpecError, match="mlp_out_proj='mlp.w2'"):
        lmscope.load((tiny_model("llama"), None), spec=bad)
    assert isinstance(bad, FamilySpec)


@torch.no_grad()
def test_rows_read_after_one_cached_prefix_equal_the_whole_sequence(family):
    from lmscope.model.kv import continuation_logits

    lm = lmscope.load((tiny_model(family), None))
    prefix, rows = [5, 17, 3, 44], [[9, 60, 7], [21], [1, 2, 3, 4, 5, 6]]  # rows of unequal length: right-padded
    positions = [[0, 2], [0], [1, 5]]
    got = continuation_logits(lm, prefix, rows, positions, batch_tokens=8)  # two chunks
    for row, at, logits in zip(rows, positions, got):
        whole = lm(torch.tensor([prefix + row]))[0].float()  # (pos, vocab)
        torch.testing.assert_close(logits, whole[[len(prefix) + p for p in at]], atol=1e-4, rtol=1e-4)
    assert continuation_logits(lm, prefix, [], []) == []


@torch.no_grad()
def test_a_shared_head_is_run_once_and_changes_no_logit(family, monkeypatch):
    from lmscope.model.kv import SharedHead, continuation_logits, supports_prefix

    lm = lmscope.load((tiny_model(family), None))
    assert supports_prefix(lm)  # probed once, before the forward passes are counted
    head, rows, positions = SharedHead([5, 17, 3]), [[9, 60, 7], [21]], [[0, 2], [0]]
    calls, real = [], lm.model.forward
    monkeypatch.setattr(lm.model, "forward", functools.wraps(real)(lambda *a, **k: calls.append(1) or real(*a, **k)))
    for prefix in ([5, 17, 3, 44, 8], [5, 17, 3, 12], [5, 17, 3]):  # two explanations after the head, then none
        got = continuation_logits(lm, prefix, rows, positions, head=head)
        for row, at, logits in zip(rows, positions, got):
            whole = real(input_ids=torch.tensor([prefix + row])).logits[0].float()
            torch.testing.assert_close(logits, whole[[len(prefix) + p for p in at]], atol=1e-4, rtol=1e-4)
    assert head.cache is not None and len(calls) == 1 + 2 * 2 + 1  # the head once; each rest and each batch
    assert not SharedHead([5, 18]).covers([5, 17, 3]) and not SharedHead([]).covers([5])
