"""Hook mechanics on toy modules: capture, replace, add, zero, apply, positions/rows, stop, grads, cleanup."""

import pytest
import torch
from torch import nn

from lmscope import HookError, ModuleSite, add, apply, capture, hooks, replace, zero


class Toy(nn.Module):
    """x (batch, pos, 4) -> a (linear) -> b (tuple-returning) -> c (linear)."""

    class TupleOut(nn.Module):
        def forward(self, x):
            return x * 2, "aux"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(4, 4)
        self.b = self.TupleOut()
        self.c = nn.Linear(4, 3)
        self.calls = []

    def forward(self, x):
        self.calls.append("a")
        h = self.a(x)
        self.calls.append("b")
        h, aux = self.b(h)
        assert aux == "aux"
        self.calls.append("c")
        return self.c(h)


A, B, C = ModuleSite("a"), ModuleSite("b"), ModuleSite("c")
C_IN = ModuleSite("c", "input")


def n_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture
def toy():
    return Toy()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(3, 5, 4)  # (batch, pos, d)


def test_capture_output_and_input(toy, x):
    with hooks(toy, capture(A), capture(B), capture(C_IN)) as cache:
        out = toy(x)
    assert torch.equal(cache[A], toy.a(x))
    assert torch.equal(cache[B], 2 * toy.a(x))  # first element of the tuple output
    assert torch.equal(cache[C_IN], cache[B])
    assert torch.equal(out, toy.c(2 * toy.a(x)))
    assert n_hooks(toy) == 0


def test_capture_positions_rows(toy, x):
    with hooks(toy, capture(A, positions=[-1, 0], rows=[2])) as cache:
        toy(x)
    full = toy.a(x)
    assert cache[A].shape == (1, 2, 4)
    assert torch.equal(cache[A][0, 0], full[2, -1])
    assert torch.equal(cache[A][0, 1], full[2, 0])


def test_zero_selected_positions_only(toy, x):
    with hooks(toy, zero(B, positions=[1], rows=[0, 2]), capture(C_IN)) as cache:
        toy(x)
    h = 2 * toy.a(x)
    got = cache[C_IN]
    assert torch.equal(got[[0, 2], 1], torch.zeros(2, 4))
    assert torch.equal(got[1], h[1])  # untouched row
    assert torch.equal(got[:, [0, 2, 3, 4]], h[:, [0, 2, 3, 4]])  # untouched positions


def test_replace_add_apply(toy, x):
    value = torch.arange(4.0)
    with hooks(toy, replace(A, value, positions=2), capture(A)) as cache:
        toy(x)
    assert torch.equal(cache[A][:, 2], value.expand(3, 4))
    with hooks(toy, add(A, 1.0), capture(A)) as cache:
        toy(x)
    assert torch.allclose(cache[A], toy.a(x) + 1)
    with hooks(toy, apply(A, lambda t: -t, positions=slice(0, 2)), capture(A)) as cache:
        toy(x)
    assert torch.equal(cache[A][:, :2], -toy.a(x)[:, :2])
    assert torch.equal(cache[A][:, 2:], toy.a(x)[:, 2:])


def test_ops_on_one_site_run_in_order(toy, x):
    with hooks(toy, add(A, 1.0), capture(A), zero(A), capture(C_IN)) as cache:
        toy(x)
    assert torch.allclose(cache[A], toy.a(x) + 1)
    assert torch.equal(cache[C_IN], torch.zeros(3, 5, 4))


def test_patch_changes_output(toy, x):
    base = toy(x)
    with hooks(toy, zero(B)):
        patched = toy(x)
    assert torch.allclose(patched, toy.c.bias.expand_as(patched))
    assert not torch.allclose(patched, base)
    assert torch.equal(toy(x), base)  # restored


def test_stop_after_skips_the_rest(toy, x):
    toy.calls.clear()
    after = []
    with hooks(toy, capture(A), stop_after=A) as cache:
        toy(x)
        after.append("not reached")
    assert toy.calls == ["a"]
    assert after == []
    assert cache[A].shape == (3, 5, 4)
    assert n_hooks(toy) == 0


def test_stop_after_input_site(toy, x):
    toy.calls.clear()
    with hooks(toy, capture(C_IN), stop_after=C_IN) as cache:
        toy(x)
    assert C_IN in cache and toy.calls == ["a", "b", "c"]
    assert n_hooks(toy) == 0


def test_hooks_removed_after_exception(toy, x):
    with pytest.raises(ZeroDivisionError):
        with hooks(toy, capture(A), zero(B), capture(C_IN)):
            toy(x)
            raise ZeroDivisionError
    assert n_hooks(toy) == 0


def test_hooks_removed_after_error_inside_hook(toy, x):
    with pytest.raises(HookError, match="expected shape"):
        with hooks(toy, capture(A), apply(B, lambda t: t[:, :1])):
            toy(x)
    assert n_hooks(toy) == 0


def test_bad_site_fails_before_registering(toy, x):
    with pytest.raises(HookError, match="no module 'nope'"):
        with hooks(toy, capture(A), capture(ModuleSite("nope"))):
            pass
    assert n_hooks(toy) == 0


def test_bad_value_and_positions(toy, x):
    with pytest.raises(HookError, match="does not broadcast"):
        with hooks(toy, replace(A, torch.ones(7))):
            toy(x)
    with pytest.raises(HookError, match="out of range"):
        with hooks(toy, zero(A, positions=[5])):
            toy(x)
    assert n_hooks(toy) == 0


def test_capture_with_grad(toy, x):
    with torch.enable_grad(), hooks(toy, capture(B, grad=True)) as cache:
        out = toy(x)
        out.sum().backward()
    act = cache[B]
    assert act.requires_grad and act.grad is not None
    # d(sum(c(h)))/dh = sum over outputs of W_c rows
    assert torch.allclose(act.grad[0, 0], toy.c.weight.sum(0))


def test_capture_detached_by_default(toy, x):
    with torch.enable_grad(), hooks(toy, capture(A)) as cache:
        toy(x)
    assert not cache[A].requires_grad


def test_grad_flows_through_patch(toy, x):
    value = torch.zeros(4, requires_grad=True)
    with torch.enable_grad(), hooks(toy, replace(B, value, positions=[0])):
        toy(x).sum().backward()
    assert torch.allclose(value.grad, 3 * toy.c.weight.sum(0))  # 3 batch rows


def test_grad_capture_rejects_selection():
    with pytest.raises(HookError):
        capture(A, positions=[0], grad=True)


def test_missing_capture_message(toy, x):
    with hooks(toy, capture(C_IN), stop_after=A) as cache:
        toy(x)
    with pytest.raises(KeyError, match="was not captured"):
        cache[C_IN]
