"""What resampling does to a tied dictionary (docs/sae.md, gemma3-270m's notes): resample a trained dictionary's dead
latents on one cached batch, as `sae train` does, and read them on other cached rows.

    python bench/diag_tied_resample.py SAE_FOLDER ACTS_FOLDER [--shards 37 38 39]

Prints the dead latents, then for today's procedure (each direction a drawn row's reconstruction error less the batch's
median error) and for the one before it (each direction a drawn input, normalised) the resampled directions'
nearest-twin cosines, how many of them fire on one row, and the FVE on the other rows.
"""

from __future__ import annotations

import argparse

import torch

from lmscope.io import load_tensors
from lmscope.methods.sae import load_sae
from lmscope.methods.sae.arch.tied import quiet_bias
from lmscope.methods.sae.dead import resample


def fve(sae, rows: torch.Tensor, dead: torch.Tensor) -> str:
    """FVE on ``rows`` and how the ``dead`` latents fire there."""
    r = sae(rows)
    err = (r.x_hat - rows).pow(2).sum(-1)
    value = 1 - err.sum() / (rows - rows.mean(0)).pow(2).sum()
    firing = (r.codes[:, dead] > 0).sum(1)
    return f"FVE {float(value):.3f}; resampled latents firing on a row: mean {float(firing.float().mean()):.2f}, " \
           f"max {int(firing.max())}"


@torch.no_grad()
def main() -> None:
    """Resample once and report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("sae")
    parser.add_argument("acts")
    parser.add_argument("--shards", type=int, nargs="+", default=[37, 38, 39])
    args = parser.parse_args()
    torch.manual_seed(0)
    sae = load_sae(args.sae)
    key = str(sae.site)
    xs = torch.cat([load_tensors(f"{args.acts}/shard-{i:05d}.safetensors")[key] for i in args.shards])
    xs = xs[torch.randperm(xs.shape[0])]
    batch, other = xs[:4096], xs[4096:20480]
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    for i in range(0, xs.shape[0], 8192):
        fired |= (sae(xs[i:i + 8192]).codes > 0).any(0)
    dead = ~fired
    print(f"{int(dead.sum())} of {sae.d_sae} latents dead on {xs.shape[0]:,} rows")
    print("before resampling:", fve(sae, other, dead))
    state = {k: v.clone() for k, v in sae.state_dict().items()}
    with torch.enable_grad():
        resample(sae, torch.optim.Adam(sae.parameters()), batch, dead, torch.Generator().manual_seed(1))
    print("today's procedure (centred errors):", twins(sae, dead), fve(sae, other, dead))
    sae.load_state_dict(state)
    loss = (sae(batch).x_hat - batch).pow(2).sum(-1)
    rows = torch.multinomial(loss.pow(2), int(dead.sum()), generator=torch.Generator().manual_seed(1))
    directions = torch.nn.functional.normalize(batch[rows] * sae.input_scale, dim=-1)  # the procedure before
    index = dead.nonzero().flatten()
    sae.M[index] = directions
    sae.bias[index] = quiet_bias(batch * sae.input_scale, directions)
    print("the procedure before (inputs):", twins(sae, dead), fve(sae, other, dead))


def twins(sae, dead: torch.Tensor) -> str:
    """How close each resampled direction is to its nearest other one."""
    d = sae.W_dec[dead]
    twin = (d @ d.T).fill_diagonal_(0).max(1).values
    return f"nearest-twin cosine mean {float(twin.mean()):.3f}, above 0.9: {int((twin > 0.9).sum())};"


if __name__ == "__main__":
    main()
