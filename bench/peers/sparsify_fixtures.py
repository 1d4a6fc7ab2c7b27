"""Build tiny random sparsify (eai-sparsify 1.3.3) coders, save them with sparsify's own
SparseCoder.save_to_disk, and record their forward outputs on a fixed input.

The fixtures of tests/methods/sae/test_peer_layouts.py (tests/data/sparsify/) were made by it. Run in the sparsify
venv (bench/peers/setup_sparsify.sh):
    bench/peers/.venv-sparsify/bin/python bench/peers/sparsify_fixtures.py tests/data/sparsify

Writes (OUT_DIR defaults to bench/peers/out/sparsify_fixture/):
    sae/layers.1/{cfg.json,sae.safetensors}            SAE (autoencoder) on hookpoint "layers.1"
    transcoder/layers.1.mlp/{cfg.json,sae.safetensors} skip transcoder on hookpoint "layers.1.mlp"
    sae_groupmax/layers.1/{cfg.json,sae.safetensors}   extra: SAE with activation="groupmax"
    io.safetensors   x [8,16] fp32 and, per coder <name> in (sae, transcoder, sae_groupmax):
                     <name>.out [8,16], <name>.latents [8,64] (dense: top-k acts scattered, rest 0),
                     <name>.pre_acts [8,64] (relu(W_enc (x - b_dec?) + b_enc)), <name>.fvu [] (vs x;
                     transcoder also <name>.fvu_y vs target y), transcoder.y [8,16] (a random target)
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # eager decoder; CPU anyway

import torch
from safetensors.torch import save_file
from sparsify import SparseCoder, SparseCoderConfig

D_IN, N_LAT, K, N_TOK = 16, 64, 4, 8
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "out" / "sparsify_fixture"


def randomize(coder: SparseCoder, gen: torch.Generator) -> None:
    """Give every parameter (encoder.weight/bias, W_dec, b_dec, W_skip) random values."""
    with torch.no_grad():
        for _, p in coder.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        coder.encoder.bias.add_(0.3)  # more positive pre-acts than k, so top-k is not padded by zeros
        if coder.cfg.normalize_decoder and not coder.cfg.transcode:
            coder.set_decoder_norm_to_unit_norm()  # what the trainer keeps true for SAEs


def reference(coder: SparseCoder, x: torch.Tensor) -> torch.Tensor:
    """The forward written out by hand, to check the description in sparsify.md."""
    h = x if coder.cfg.transcode else x - coder.b_dec
    pre = torch.relu(h @ coder.encoder.weight.T + coder.encoder.bias)
    if coder.cfg.activation == "topk":
        vals, idx = pre.topk(coder.cfg.k, dim=-1)
    else:  # groupmax: max in each of k contiguous groups of num_latents // k
        vals, idx = pre.unflatten(-1, (coder.cfg.k, -1)).max(-1)
        idx = idx + torch.arange(0, coder.num_latents, coder.num_latents // coder.cfg.k)
    dense = torch.zeros_like(pre).scatter(-1, idx, vals)
    out = dense @ coder.W_dec + coder.b_dec
    if coder.W_skip is not None:
        out = out + x @ coder.W_skip.T
    return out


def main() -> None:
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(N_TOK, D_IN, generator=gen)
    y = torch.randn(N_TOK, D_IN, generator=gen)
    tensors = {"x": x, "transcoder.y": y}

    specs = {
        "sae": ("layers.1", SparseCoderConfig(num_latents=N_LAT, k=K)),
        "transcoder": (
            "layers.1.mlp",
            SparseCoderConfig(num_latents=N_LAT, k=K, transcode=True, skip_connection=True),
        ),
        "sae_groupmax": ("layers.1", SparseCoderConfig(num_latents=N_LAT, k=K, activation="groupmax")),
    }
    for name, (hook, cfg) in specs.items():
        torch.manual_seed(0)
        coder = SparseCoder(D_IN, cfg, device="cpu", dtype=torch.float32)
        randomize(coder, gen)
        folder = OUT / name / hook
        coder.save_to_disk(folder)

        # Reload through sparsify's own loaders (single folder and the whole run folder).
        loaded = SparseCoder.load_from_disk(folder)
        many = SparseCoder.load_many(str(OUT / name), local=True)
        assert list(many) == [hook], list(many)
        with torch.no_grad():
            fo = loaded(x)
            pre = loaded.encode(x).pre_acts
            dense = torch.zeros(N_TOK, N_LAT).scatter(-1, fo.latent_indices, fo.latent_acts)
            ref = reference(loaded, x)
        torch.testing.assert_close(fo.sae_out, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(many[hook](x).sae_out, fo.sae_out)
        assert (dense > 0).sum(-1).eq(K).all(), "expected exactly k active latents per token"

        tensors[f"{name}.out"] = fo.sae_out.contiguous()
        tensors[f"{name}.latents"] = dense
        tensors[f"{name}.pre_acts"] = pre.contiguous()
        tensors[f"{name}.fvu"] = fo.fvu.reshape(())
        if cfg.transcode:
            with torch.no_grad():
                tensors[f"{name}.fvu_y"] = loaded(x, y).fvu.reshape(())
        keys = {k: tuple(v.shape) for k, v in loaded.state_dict().items()}
        print(f"{name}: {folder} {keys} fvu={fo.fvu.item():.4f}")

    save_file(tensors, str(OUT / "io.safetensors"))
    print(f"wrote {OUT / 'io.safetensors'}: {sorted(tensors)}")


if __name__ == "__main__":
    main()
