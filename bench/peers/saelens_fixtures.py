"""Tiny random SAELens 6 SAEs and transcoders, saved by SAELens itself, with SAELens' outputs on a fixed input.

The fixtures of tests/methods/sae/test_peer_layouts.py (tests/data/saelens/) were made by it. Run in the SAELens
venv (bench/peers/setup_saelens.sh):
    bench/peers/.venv-saelens/bin/python bench/peers/saelens_fixtures.py tests/data/saelens

One folder per case (cfg.json + sae_weights.safetensors, SAELens' save_model), and io.safetensors: x [8, 16] and,
per case, <case>.codes (SAELens' encode) and <case>.out (SAELens' forward: decode(encode(x)), + x W_skip^T for skip
transcoders).
"""

import sys
from pathlib import Path

import torch
from sae_lens import SAE
from safetensors.torch import save_file

D_IN, D_SAE, K, N = 16, 64, 4, 8
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "out" / "saelens_fixture"
META = {"model_name": "smollm2-135m", "hook_name": "blocks.1.hook_resid_post", "hook_head_index": None}
TC_META = {"model_name": "gemma3-270m", "hook_name": "blocks.1.hook_mlp_in", "hook_name_out": "blocks.1.hook_mlp_out",
           "hf_hook_name": "model.layers.1.pre_feedforward_layernorm.output",
           "hf_hook_name_out": "model.layers.1.post_feedforward_layernorm.output"}
CASES = {
    "standard": {"architecture": "standard"},
    "topk_rescaled": {"architecture": "topk", "k": K, "rescale_acts_by_decoder_norm": True},
    "jumprelu": {"architecture": "jumprelu"},
    "jumprelu_no_b_dec_in": {"architecture": "jumprelu", "apply_b_dec_to_input": False},
    "transcoder": {"architecture": "transcoder", "d_out": D_IN, "apply_b_dec_to_input": False},
    "skip_transcoder": {"architecture": "skip_transcoder", "d_out": D_IN, "apply_b_dec_to_input": False},
    "jumprelu_skip_transcoder": {"architecture": "jumprelu_skip_transcoder", "d_out": D_IN,
                                 "apply_b_dec_to_input": False},
    "gated": {"architecture": "gated"},
    "gated_no_b_dec_in": {"architecture": "gated", "apply_b_dec_to_input": False},
}


def build(case: dict, gen: torch.Generator) -> SAE:
    transcoder = "transcoder" in case["architecture"]
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", **case,
           "metadata": TC_META if transcoder else META}
    sae = SAE.from_dict(cfg)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.4)
            if name == "threshold":
                p.copy_(torch.rand(p.shape, generator=gen) * 0.3)
            if name == "W_dec" and case.get("rescale_acts_by_decoder_norm"):
                p.mul_(torch.rand(p.shape[0], 1, generator=gen) + 0.5)  # rows not unit-norm
    return sae.eval()


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, D_IN, generator=gen)
    io = {"x": x}
    for name, case in CASES.items():
        sae = build(case, gen)
        with torch.no_grad():
            io[f"{name}.codes"] = sae.encode(x)
            io[f"{name}.out"] = sae(x)
        sae.save_model(OUT / name)
    save_file(io, OUT / "io.safetensors")
    print(f"wrote {len(CASES)} SAELens folders and io.safetensors to {OUT}")


if __name__ == "__main__":
    main()
