"""SAELens reads lmscope's SAELens-format folders: run in the SAELens venv on a tree written by lmscope.

    .venv/bin/python bench/peers/saelens_reads_lmscope.py write /tmp/lm2sl      # lmscope's venv: folders + io
    bench/peers/.venv-saelens/bin/python bench/peers/saelens_reads_lmscope.py check /tmp/lm2sl

``write`` saves one small trained-like dictionary per architecture (and transcoders) with
``save_sae(format="saelens")`` and lmscope's outputs on a fixed input; ``check`` loads each with SAELens'
``SAE.load_from_disk`` and prints the largest difference of codes and outputs, one line per folder.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def write(out: Path) -> None:
    from lmscope.methods.sae import SaeConfig, build_sae, save_sae

    cases = {"relu": SaeConfig("relu", d_in=16, width=64), "topk": SaeConfig("topk", d_in=16, width=64, k=4),
             "batchtopk": SaeConfig("batchtopk", d_in=16, width=64, k=4), "jumprelu": SaeConfig("jumprelu", d_in=16,
                                                                                                  width=64),
             "tied": SaeConfig("tied", d_in=16, width=64), "gated": SaeConfig("gated", d_in=16, width=64),
             "matryoshka": SaeConfig("matryoshka", d_in=16, width=64, k=4),
             "relu_transcoder": SaeConfig("relu", d_in=16, width=64, transcoder=True, d_out=12),
             "relu_skip_transcoder": SaeConfig("relu", d_in=16, width=64, transcoder=True, skip=True),
             "jumprelu_skip_transcoder": SaeConfig("jumprelu", d_in=16, width=64, transcoder=True, skip=True)}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, generator=gen)
    io = {"x": x}
    for name, cfg in cases.items():
        sae = build_sae(cfg, seed=1)
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
            if hasattr(sae, "threshold"):
                sae.threshold.copy_(torch.rand(sae.threshold.shape, generator=gen) * 0.2)
            sae.input_scale.fill_(1.7)
            if sae.transcoder:
                sae.output_scale.fill_(0.6)
        sae.eval()
        io[f"{name}.codes"], io[f"{name}.out"] = sae.encode(x).detach(), sae.output(x).detach()
        target = "mlp_out.1" if sae.transcoder else ""
        save_sae(sae, out / name, site="mlp_in.1" if target else "resid_post.1", model="m", format="saelens",
                 target=target)
    save_file(io, out / "io.safetensors")


def check(out: Path) -> None:
    from sae_lens import SAE

    io = load_file(out / "io.safetensors")
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        sae = SAE.load_from_disk(str(folder))
        with torch.no_grad():
            codes, y = sae.encode(io["x"]), sae(io["x"])
        print(f"{folder.name}: SAELens {type(sae).__name__}, hook {sae.cfg.metadata.hook_name}, codes max diff "
              f"{float((codes - io[folder.name + '.codes']).abs().max()):.2e}, outputs max diff "
              f"{float((y - io[folder.name + '.out']).abs().max()):.2e}")


if __name__ == "__main__":
    {"write": write, "check": check}[sys.argv[1]](Path(sys.argv[2]))
