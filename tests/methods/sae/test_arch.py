"""Each SAE architecture's loss and gradient against a hand computation on tiny shapes."""

import pytest
import torch

import lmscope
from lmscope.methods.sae import SaeConfig, build_sae
from lmscope.methods.sae.arch import geometric_median

torch.manual_seed(0)
X = torch.randn(5, 6)


def grads(loss, params):
    return torch.autograd.grad(loss, params)


def test_tied_loss_is_the_papers():
    sae = build_sae(SaeConfig("tied", d_in=6, ratio=2, l1_coefficient=0.01), seed=1)
    with torch.no_grad():
        sae.bias.normal_()
    m = sae.M / sae.M.norm(dim=-1, keepdim=True)  # rows of M are unit vectors
    c = torch.relu(X @ m.T + sae.bias)
    expected = (X - c @ m).pow(2).mean() + 0.01 * c.abs().sum(-1).mean()
    out = sae(X)
    torch.testing.assert_close(out.loss, expected)
    for a, b in zip(grads(out.loss, [sae.M, sae.bias]), grads(expected, [sae.M, sae.bias])):
        torch.testing.assert_close(a, b)
    assert torch.allclose(sae.W_dec.norm(dim=-1), torch.ones(12)) and torch.equal(sae.W_enc, sae.W_dec.T)


def test_relu_loss_weights_l1_by_decoder_norms():
    sae = build_sae(SaeConfig("relu", d_in=6, width=10, l1_coefficient=2.0), seed=2)
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_()
    c = torch.relu((X - sae.b_dec) @ sae.W_enc + sae.b_enc)
    x_hat = c @ sae.W_dec + sae.b_dec
    expected = (X - x_hat).pow(2).sum(-1).mean() + 2.0 * (c * sae.W_dec.norm(dim=-1)).sum(-1).mean()
    out = sae(X)
    torch.testing.assert_close(out.loss, expected)
    params = [sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec]
    for a, b in zip(grads(out.loss, params), grads(expected, params)):
        torch.testing.assert_close(a, b)


def test_topk_keeps_k_and_auxk_reconstructs_the_error_from_dead_latents():
    sae = build_sae(SaeConfig("topk", d_in=6, width=12, k=3, aux_k=2, aux_coefficient=0.5), seed=3)
    out = sae(X)
    assert ((out.codes > 0).sum(-1) <= 3).all() and (out.codes > 0).sum() > 5
    dead = torch.zeros(12, dtype=torch.bool)
    dead[[1, 4, 7, 9]] = True
    pre = (X - sae.b_dec) @ sae.W_enc + sae.b_enc
    codes = torch.zeros_like(pre)
    top = torch.where(dead, pre, torch.tensor(-torch.inf)).topk(2, dim=-1)
    codes.scatter_(-1, top.indices, torch.relu(top.values))
    e = (X - out.x_hat).detach()
    expected = 0.5 * (e - codes @ sae.W_dec).pow(2).sum(-1).mean()
    torch.testing.assert_close(sae(X, dead=dead).sparsity, expected)
    assert float(sae(X, dead=torch.zeros(12, dtype=torch.bool)).sparsity) == 0.0


def test_unit_decoder_stays_on_the_sphere():
    sae = build_sae(SaeConfig("topk", d_in=6, width=12, k=3), seed=4)
    opt = torch.optim.Adam(sae.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        sae(X).loss.backward()
        sae.project_decoder_grad()
        assert torch.allclose((sae.W_dec.grad * sae.W_dec).sum(-1), torch.zeros(12), atol=1e-6)
        opt.step()
        sae.constrain()
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(12))


def test_batchtopk_keeps_k_per_row_on_average_and_thresholds_at_inference():
    sae = build_sae(SaeConfig("batchtopk", d_in=6, width=12, k=2, threshold_momentum=0.0), seed=5)
    out = sae.train()(X)
    assert int((out.codes > 0).sum()) == 10  # k x rows over the batch
    kept = out.codes[out.codes > 0]
    assert float(sae.threshold) == pytest.approx(float(kept.min().detach()))
    sae.eval()
    acts = torch.relu(sae.pre_acts(X))
    torch.testing.assert_close(sae.encode(X), acts * (acts > sae.threshold))


def test_geometric_median_beats_the_mean_on_outliers():
    points = torch.cat([torch.zeros(20, 2), torch.full((3, 2), 100.0)])
    median = geometric_median(points)
    assert float(median.norm()) < 1.0 < float(points.mean(0).norm())


def test_width_must_be_positive():
    with pytest.raises(lmscope.ConfigError, match="no latents"):
        _ = SaeConfig("relu", d_in=0, ratio=8).d_sae
    with pytest.raises(lmscope.ConfigError, match="ratio must be a number > 0"):
        SaeConfig("relu", ratio=0)
    with pytest.raises(lmscope.ConfigError, match="architecture must be one of"):
        SaeConfig("crosscoder")


def test_resampling_reinitialises_dead_latents_toward_badly_reconstructed_inputs():
    from lmscope.methods.sae.dead import Firing, resample

    sae = build_sae(SaeConfig("relu", d_in=6, width=10), seed=6)
    opt = torch.optim.Adam(sae.parameters(), lr=0.01)
    sae(X).loss.backward()
    opt.step()
    firing = Firing(10, window=5)
    fired = torch.zeros(10, dtype=torch.bool)
    fired[:7] = True
    firing.update(fired, 5)
    dead = firing.dead()
    assert dead.tolist() == [False] * 7 + [True] * 3
    alive_enc = sae.W_enc[:, :7].detach().clone()
    x = torch.zeros(8, 6)
    x[3] = torch.tensor([0.0, 3.0, 0.0, 0.0, 4.0, 0.0])  # the only row the SAE reconstructs badly
    with torch.no_grad():
        sae.b_dec.zero_()
    assert resample(sae, opt, x, dead, torch.Generator().manual_seed(0)) == 3
    expected = torch.tensor([0.0, 0.6, 0.0, 0.0, 0.8, 0.0])
    for i in (7, 8, 9):
        torch.testing.assert_close(sae.W_dec[i].detach(), expected)
        assert float(sae.b_enc[i].detach()) == 0.0 and float(opt.state[sae.W_dec]["exp_avg"][i].abs().sum()) == 0.0
    torch.testing.assert_close(sae.W_enc[:, 7].norm(), 0.2 * alive_enc.norm(dim=0).mean())
    assert torch.equal(sae.W_enc[:, :7], alive_enc)  # alive latents are untouched


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "matryoshka"])
def test_sparse_training_step_equals_the_dense_one(arch):
    from lmscope.methods.sae.arch import SparseAutoencoder

    torch.manual_seed(1)
    x = torch.randn(16, 6)
    dead = torch.zeros(12, dtype=torch.bool)
    dead[[0, 5, 6, 11]] = True
    results = []
    for forward in (SparseAutoencoder.forward, type(build_sae(SaeConfig(arch, d_in=6, width=12))).forward):
        sae = build_sae(SaeConfig(arch, d_in=6, width=12, k=3, aux_k=2, threshold_momentum=0.5), seed=7)
        torch.manual_seed(2)  # the same biases for both
        with torch.no_grad():
            sae.b_dec.normal_()
            sae.b_enc.normal_()
        out = forward(sae, x, dead=dead)
        params = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec]
        results.append((out, grads(out.loss, params), float(sae.threshold) if arch != "topk" else 0.0))
    (dense, dense_grads, t1), (sparse, sparse_grads, t2) = results
    torch.testing.assert_close(sparse.loss, dense.loss)
    torch.testing.assert_close(sparse.codes, dense.codes.detach())
    torch.testing.assert_close(sparse.x_hat, dense.x_hat)
    for a, b in zip(sparse_grads, dense_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert t1 == t2


@pytest.mark.parametrize("arch", ["relu", "tied"])
@pytest.mark.parametrize("route", ["sparse", "dense"])
def test_l1_training_step_equals_the_plain_forward_on_either_route(arch, route):
    from lmscope.methods.sae.arch import SparseAutoencoder

    torch.manual_seed(3)
    x = torch.randn(16, 6)
    results = []
    for forward in (SparseAutoencoder.forward, type(build_sae(SaeConfig(arch, d_in=6, width=12))).forward):
        sae = build_sae(SaeConfig(arch, d_in=6, width=12, l1_coefficient=0.7), seed=8)
        sae.sparse_below = 1.0 if route == "sparse" else 0.0
        torch.manual_seed(4)  # the same decoder bias for both
        with torch.no_grad():
            sae.b_enc.copy_(torch.linspace(-1.5, 0.2, 12))  # some latents never fire, others often
            if arch == "relu":
                sae.b_dec.normal_()
        out = forward(sae, x, l1_scale=0.5)
        params = [p for p in sae.parameters()]
        results.append((out, grads(out.loss, params)))
    (plain, plain_grads), (step, step_grads) = results
    assert 0 < int((plain.codes > 0).sum()) < plain.codes.numel() // 2
    for name in ("loss", "reconstruction", "sparsity", "x_hat", "codes"):
        torch.testing.assert_close(getattr(step, name).detach(), getattr(plain, name).detach())
    for a, b in zip(step_grads, plain_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("route", ["sparse", "dense"])
def test_under_autocast_an_l1_step_runs_its_matmuls_in_bfloat16_and_keeps_float32_gradients(route):
    torch.manual_seed(5)
    x = torch.randn(64, 32)
    sae = build_sae(SaeConfig("relu", d_in=32, width=96, l1_coefficient=0.3), seed=9)
    sae.sparse_below = 1.0 if route == "sparse" else 0.0
    with torch.no_grad():
        sae.b_enc.fill_(-0.05)
    results = []
    for enabled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = sae(x)
        results.append((out, grads(out.loss, list(sae.parameters()))))
    (exact, exact_grads), (mixed, mixed_grads) = results
    assert mixed.loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in mixed_grads)
    assert float(mixed.loss.detach()) != float(exact.loss.detach())
    torch.testing.assert_close(mixed.loss, exact.loss, rtol=2e-2, atol=0)
    for a, b in zip(mixed_grads, exact_grads):
        assert float((a - b).norm() / b.norm()) < 0.1


def test_an_l1_step_goes_sparse_only_under_the_density_threshold(monkeypatch):
    from lmscope.methods.sae.arch import sparse

    calls = []
    monkeypatch.setattr(sparse, "sparse_decode", lambda *a: calls.append(a) or torch.zeros(5, 6))
    sae = build_sae(SaeConfig("relu", d_in=6, width=12), seed=8)
    density = float((sae.pre_acts(X) > 0).float().mean())
    sae.sparse_below = density + 0.01
    sae(X)
    sae.sparse_below = density - 0.01
    sae(X)
    assert len(calls) == 1


def test_a_resampled_tied_latent_fires_only_near_its_input_despite_a_large_mean():
    from lmscope.methods.sae.arch.tied import TIED_FIRING
    from lmscope.methods.sae.dead import resample

    sae = build_sae(SaeConfig("tied", d_in=6, width=10), seed=6)
    opt = torch.optim.Adam(sae.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(1)
    x = 20 * torch.nn.functional.normalize(torch.ones(6), dim=0) + torch.randn(400, 6, generator=gen)  # big mean
    x[123] += torch.tensor([0.0, 0.0, 9.0, 0.0, 0.0, 0.0])  # badly reconstructed, drawn with weight ~ loss^2
    dead = torch.zeros(10, dtype=torch.bool)
    dead[[2, 5]] = True
    alive_before = sae.M[~dead].detach().clone()
    assert resample(sae, opt, x, dead, torch.Generator().manual_seed(0)) == 2
    pre = sae.pre_acts(x).detach()  # (400, 10)
    for i in (2, 5):
        assert 1 <= int((pre[:, i] > 0).sum()) <= TIED_FIRING * 400 + 1  # alive, and not on all 400 rows
        assert 0.99 < float(sae.M[i].detach().norm()) < 1.01
    assert torch.equal(sae.M[~dead], alive_before)


def test_dead_latents_are_resampled_toward_distinct_inputs_even_when_one_outlier_dominates():
    from lmscope.methods.sae.dead import resample

    sae = build_sae(SaeConfig("tied", d_in=6, width=12), seed=6)
    opt = torch.optim.Adam(sae.parameters(), lr=0.01)
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(2))
    x[7] *= 1000  # an attention-sink-like row: its squared loss is ~1e12 times the others'
    dead = torch.zeros(12, dtype=torch.bool)
    dead[:6] = True
    assert resample(sae, opt, x, dead, torch.Generator().manual_seed(0)) == 6
    directions = sae.M[:6].detach()
    assert int(((directions @ directions.T).abs() > 0.999).sum()) == 6  # six different directions, not six copies


def test_resampled_tied_latents_take_centred_errors_not_inputs_near_the_mean():
    """Inputs along a large shared mean: resampled tied directions are drawn rows' errors less the median error.

    (Before, each was a drawn input, normalised: all at cosine ~0.99 to the mean and to each other.)
    """
    from lmscope.methods.sae.dead import resample

    sae = build_sae(SaeConfig("tied", d_in=16, width=24), seed=6)
    opt = torch.optim.Adam(sae.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(3)
    mean = 30 * torch.nn.functional.normalize(torch.ones(16), dim=0)
    x = mean + torch.randn(300, 16, generator=gen)  # (300, 16)
    dead = torch.zeros(24, dtype=torch.bool)
    dead[:8] = True
    with torch.no_grad():
        errors = x - sae(x).x_hat
    candidates = torch.nn.functional.normalize(errors - errors.median(0).values, dim=-1)  # (300, 16), by hand
    assert resample(sae, opt, x, dead, torch.Generator().manual_seed(0)) == 8
    directions = sae.W_dec[:8].detach()  # (8, 16)
    assert bool(((directions @ candidates.T).max(1).values > 0.9999).all())  # each is one row's centred error
    assert float((directions @ torch.nn.functional.normalize(mean, dim=0)).abs().max()) < 0.6
    twins = (directions @ directions.T).fill_diagonal_(0).max(1).values
    assert float(twins.max()) < 0.9


def _jumprelu(**kw):
    sae = build_sae(SaeConfig("jumprelu", d_in=6, width=12, jumprelu_bandwidth=0.5, **kw), seed=6)
    with torch.no_grad():
        sae.threshold.copy_(torch.linspace(0.0, 0.6, 12))
        sae.b_enc.normal_(0, 0.3)
    return sae.train()


def _by_hand(sae, eps=0.5):
    """(pre, codes, x_hat, the rectangle kernel at each (row, latent)) of the JumpReLU SAE on X, computed here."""
    pre = (X - sae.b_dec) @ sae.W_enc + sae.b_enc
    theta = sae.threshold.detach()
    codes = torch.relu(pre) * (pre > theta)
    kernel = (((pre - theta) / eps).abs() < 0.5).float().detach()
    return pre, codes, codes @ sae.W_dec + sae.b_dec, kernel


def test_jumprelu_loss_and_straight_through_gradients_are_the_papers():
    """c = z H(z - theta); loss = |x - x_hat|^2 + lambda L0; d/dtheta through the kernel K((z - theta) / eps)."""
    sae = _jumprelu(l0_coefficient=0.3)
    pre, codes, x_hat, kernel = _by_hand(sae)
    assert 0 < int(kernel.sum()) < kernel.numel() and 0 < int((codes > 0).sum()) < codes.numel()
    out = sae(X)
    torch.testing.assert_close(out.codes, codes)
    l0 = (codes > 0).float().sum(-1).mean()
    torch.testing.assert_close(out.loss, (X - x_hat).pow(2).sum(-1).mean() + 0.3 * l0)
    g_theta, g_enc = grads(out.loss, [sae.threshold, sae.W_enc])
    d_codes = grads((X - x_hat).pow(2).sum(-1).mean(), [codes])[0].detach()  # dL_recon / dc (n, d_sae)
    theta, n = sae.threshold.detach(), X.shape[0]
    expected = (-(theta / 0.5) * kernel * d_codes).sum(0) + 0.3 * (-(1 / 0.5) * kernel).sum(0) / n
    torch.testing.assert_close(g_theta, expected)
    d_pre = d_codes * (pre > theta).float()  # the paper's: no kernel term reaches the pre-activations
    torch.testing.assert_close(g_enc, (X - sae.b_dec).detach().T @ d_pre.detach())


def test_jumprelu_straight_through_to_the_input_and_the_other_sparsity_terms():
    sae = _jumprelu(l0_coefficient=0.0, jumprelu_ste_to_input=True)
    pre, codes, x_hat, kernel = _by_hand(sae)
    g_enc = grads(sae(X).loss, [sae.W_enc])[0]
    d_codes = grads((X - x_hat).pow(2).sum(-1).mean(), [codes])[0].detach()
    theta = sae.threshold.detach()
    d_pre = d_codes * (pre > theta).float() + (theta / 0.5) * kernel * d_codes  # Anthropic's: the kernel too
    torch.testing.assert_close(g_enc, (X - sae.b_dec).detach().T @ d_pre.detach())
    tanh = _jumprelu(l0_coefficient=2.0, jumprelu_loss="tanh", jumprelu_tanh_scale=3.0)
    _, codes, x_hat, _ = _by_hand(tanh)
    expected = torch.tanh(3.0 * codes * tanh.W_dec.norm(dim=-1)).sum(-1).mean() * 2.0
    torch.testing.assert_close(tanh(X).sparsity, expected)
    quad = _jumprelu(l0_coefficient=1.0, jumprelu_loss="quadratic", target_l0=2.0)
    _, codes, _, _ = _by_hand(quad)
    l0 = (codes > 0).float().sum(-1)
    torch.testing.assert_close(quad(X).sparsity, (2 / 2.0 * (l0 - 2.0).pow(2)).mean())
    with pytest.raises(lmscope.ConfigError, match="target-l0"):
        SaeConfig("jumprelu", jumprelu_loss="quadratic")


def test_jumprelu_thresholds_stay_non_negative_and_inference_thresholds():
    sae = _jumprelu()
    with torch.no_grad():
        sae.threshold[0] = -0.2
    sae.constrain()
    assert float(sae.threshold.detach().min()) == 0.0
    sae.eval()
    pre = sae.pre_acts(X)
    torch.testing.assert_close(sae.encode(X), torch.relu(pre) * (pre > sae.threshold))


def test_matryoshka_loss_adds_every_prefix_reconstructed_from_its_own_latents():
    sae = build_sae(SaeConfig("matryoshka", d_in=6, width=12, k=3, matryoshka_widths=(3, 6)), seed=8)
    with torch.no_grad():
        sae.b_dec.normal_()
    out = sae.train()(X)
    codes = out.codes.detach()
    expected = sum((X - (codes[:, :w] @ sae.W_dec[:w] + sae.b_dec)).pow(2).sum(-1).mean() for w in (3, 6, 12))
    torch.testing.assert_close(out.reconstruction, expected)
    assert int((codes > 0).sum()) == 15  # BatchTopK: k x rows over the batch
    assert sae.prefix_ends() == [3, 6]
    assert build_sae(SaeConfig("matryoshka", d_in=8, width=64)).prefix_ends() == [4, 8, 16, 32]
    with pytest.raises(lmscope.ConfigError, match="increasing order"):
        SaeConfig("matryoshka", matryoshka_widths=(6, 3))
    with pytest.raises(lmscope.ConfigError, match="past the dictionary"):
        SaeConfig("matryoshka", d_in=6, width=12, k=3, matryoshka_widths=(3, 24)).check_k()


def test_gated_loss_is_the_papers_with_a_frozen_decoder_in_the_auxiliary_term():
    sae = build_sae(SaeConfig("gated", d_in=6, width=12, l1_coefficient=0.5), seed=9)
    with torch.no_grad():
        for p in (sae.b_enc, sae.r_mag, sae.b_mag, sae.b_dec):
            p.normal_(0, 0.3)
    x_c = X - sae.b_dec
    gate, mag = x_c @ sae.W_enc + sae.b_enc, x_c @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag
    codes = (gate > 0) * torch.relu(mag)
    x_hat = codes @ sae.W_dec + sae.b_dec
    frozen = torch.relu(gate) @ sae.W_dec.detach() + sae.b_dec.detach()
    expected = (X - x_hat).pow(2).sum(-1).mean() + (X - frozen).pow(2).sum(-1).mean() + \
        0.5 * (torch.relu(gate) * sae.W_dec.norm(dim=-1)).sum(-1).mean()
    out = sae(X)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.codes, codes)
    params = [sae.W_enc, sae.b_enc, sae.r_mag, sae.b_mag, sae.W_dec, sae.b_dec]
    for a, b in zip(grads(out.loss, params), grads(expected, params)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(sae.eval().encode(X), codes)
