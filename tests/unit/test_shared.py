"""The shared layer under the method families: checkpoints of a module and its optimiser, and the edit handle."""

import pytest
import torch

from lmscope.checkpoints import checkpoint_folder, load_training_state, save_training_state
from lmscope.errors import EditError
from lmscope.model.edits import apply_w_out_edit, weight_digest
from lmscope.model.weights import EditHandle, patch_weight
from tests.helpers import tiny_lm


class Transposed(torch.nn.Module):
    """A module whose weight is the clone of a transposed view (as an SAE's W_enc): strides differ from contiguous."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(6, 4).T.clone())


def _steps(module, opt, n):
    for _ in range(n):
        opt.zero_grad()
        (module.w.sin().sum()).backward()
        opt.step()


def test_a_checkpoint_resumes_fused_adam_bit_for_bit(tmp_path):
    torch.manual_seed(0)
    straight = Transposed()
    resumed = Transposed()
    resumed.load_state_dict(straight.state_dict())
    opts = [torch.optim.Adam(m.parameters(), lr=0.1, fused=True) for m in (straight, resumed)]
    _steps(straight, opts[0], 5)
    _steps(resumed, opts[1], 2)
    with checkpoint_folder(tmp_path / "ck") as tmp:
        save_training_state(tmp / "job-0", resumed, opts[1], "sae", {"since": torch.arange(3)}, {"scale": 2.0})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["job-0.json", "job-0.safetensors"]
    assert not (tmp_path / "ck.tmp").exists()
    fresh = Transposed()
    opt = torch.optim.Adam(fresh.parameters(), lr=0.1, fused=True)
    extra, meta = load_training_state(tmp_path / "ck" / "job-0", fresh, opt, "sae")
    assert torch.equal(extra["since"], torch.arange(3)) and meta == {"scale": 2.0}
    assert opt.state[fresh.w]["exp_avg"].stride() == fresh.w.stride()  # the moments take the weight's layout
    _steps(fresh, opt, 3)
    assert torch.equal(fresh.w, straight.w)


def test_the_edit_handle_undoes_several_patches_in_reverse_and_checks_digests():
    lm = tiny_lm("llama")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    a, b = lm.layout.blocks[0].mlp.down_proj.weight, lm.layout.blocks[1].mlp.down_proj.weight
    handle = EditHandle("two layers", [patch_weight(a, torch.ones_like(a)), patch_weight(b, torch.ones_like(b))])
    assert handle.active and handle.patch.param is a
    with pytest.raises(EditError, match="other weights"):
        apply_w_out_edit(lm, 0, "stale", lambda t: torch.zeros_like(a), digest="0" * 16)
    inner = apply_w_out_edit(lm, 0, "on top", lambda t: torch.ones_like(a), digest=weight_digest(lm, 0))
    with pytest.raises(EditError, match="reverse order"):
        handle.undo()  # the later edit of layer 0 first
    inner.undo()
    handle.undo()
    assert not handle.active and all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())


def test_units_write_along_directions_that_move_their_own_coordinate_only():
    from lmscope.model.sites import Site
    from lmscope.model.units import coordinates, projections

    gen = torch.Generator().manual_seed(0)
    readout = torch.nn.functional.normalize(torch.randn(3, 8, generator=gen), dim=-1)  # random, not orthogonal
    units = projections("random", Site(1, "resid_post"), torch.randn(8, generator=gen), readout)
    x = torch.randn(5, 8, generator=gen)
    moved = units.encode(x + units.directions(torch.tensor([1]))) - units.encode(x)  # unit 1 moved by 1
    torch.testing.assert_close(moved, torch.tensor([0.0, 1.0, 0.0]).expand(5, 3), atol=1e-5, rtol=0)
    some = units.select([2, 0])
    assert some.unit_ids == [2, 0] and torch.equal(some.encode(x), units.encode(x)[:, [2, 0]])
    dims = coordinates("dims", Site(0, "resid_post"), 8)
    assert dims.unit_ids == list(range(8)) and torch.equal(dims.directions(torch.tensor([3]))[0], torch.eye(8)[3])


def test_an_sae_gives_its_features_as_units():
    from lmscope.methods.sae import SaeConfig, build_sae
    from lmscope.model.sites import Site

    sae = build_sae(SaeConfig("topk", d_in=8, ratio=2, k=3), seed=0)
    sae.input_scale.fill_(2.0)
    units = sae.units(Site(1, "resid_post"))
    x = torch.randn(4, 8)
    assert units.n_units == 16 and torch.equal(units.encode(x), sae.encode(x))
    torch.testing.assert_close(units.directions(torch.tensor([5])), sae.W_dec[[5]].detach() / 2.0)
