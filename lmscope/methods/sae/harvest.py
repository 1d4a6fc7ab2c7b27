"""Activations for dictionary learning: the model run over a corpus, one or more sites collected per position.

The stream is cut into *buffers*: buffer i holds the activations of token batches [i m, (i + 1) m) of the corpus
(m = buffer_rows / tokens per batch), so any buffer can be rebuilt alone: to resume, the batches before it are
tokenised but never run. A buffer is shuffled with a seed of its own and cut into training batches; the stream is
the same whether it comes from the model or from the disk cache, where each buffer is one safetensors shard beside a
manifest naming the model (fingerprint), sites and corpus. The forward pass stops after the deepest site's block.
Positions of special tokens (BOS, EOS, padding) are left out, and optionally "attention sink" rows whose norm
exceeds a multiple of the median.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from lmscope.data.activations import TextConfig, corpus_batches, deepest_stop, run_batch
from lmscope.errors import ArtifactError, ConfigError, DataError, SiteError
from lmscope.io import load_tensors, read_json, save_tensors, write_json
from lmscope.methods.sae.config import HarvestConfig
from lmscope.model.lm import LM
from lmscope.model.sites import KINDS, Site
from lmscope.model.weights import is_conv1d, linear_dims
from lmscope.progress import tqdm

log = logging.getLogger(__name__)

Batch = dict[Site, torch.Tensor]  # site -> (rows, d), rows aligned across sites
MANIFEST = "manifest.json"
OLD_DEFAULTS = {"drop_first": False, "sink_factor": 0.0}  # what caches written before a setting existed did


def site_key(site: Site) -> str:
    """A site as a tensor / file name: "resid_post.15"."""
    return str(site)


def parse_site(text: str) -> Site:
    """The inverse of :func:`site_key`: :meth:`lmscope.Site.parse` (kept under this name for older code)."""
    return Site.parse(text)


HARVESTABLE = tuple(k for k in KINDS if k != "attn_pattern")  # one vector per token: what a dictionary reads


def check_sites(sites: Sequence[Site]) -> None:
    """Refuse a site an SAE cannot read (an attention pattern is a matrix per token, not a vector): one line."""
    for site in sites:
        if site.kind not in HARVESTABLE:
            raise SiteError(f"{site} cannot be harvested: an SAE reads one vector per token, and {site.kind} is not "
                            f"one; harvestable kinds are {', '.join(HARVESTABLE)}")


def site_width(lm: LM, site: Site) -> int:
    """The width of the activation at ``site`` of ``lm`` (what an SAE there reads), from the module that carries it.

    A linear layer's input or output gives its own width (``mlp_key``, ``mlp_pre``, ``attn_heads``, ...), an
    embedding its dimension, anything else (a block, attention, the MLP) the residual stream's.
    """
    check_sites([site])
    point = lm.hook_point(lm.check(site))
    module = point.module
    if is_conv1d(module):
        return linear_dims(module)[0 if point.where == "input" else 1]
    width = getattr(module, "in_features" if point.where == "input" else "out_features", None)
    if isinstance(width, int):
        return width
    if isinstance(module, torch.nn.Embedding):
        return module.embedding_dim
    return lm.d_model


def physical_memory() -> int:
    """The machine's memory in bytes (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def check_buffer_memory(lm: LM, sites: Sequence[Site], buffer_rows: int, memory: int | None = None) -> None:
    """Refuse a buffer that would not fit in half the machine's memory (one ConfigError giving the rows that fit).

    A buffer holds ``buffer_rows`` float32 rows at every site, twice while it is assembled.
    """
    memory = physical_memory() if memory is None else memory
    per_row = 4 * sum(site_width(lm, s) for s in sites)  # float32 bytes of one position at every site
    need = 2 * buffer_rows * per_row
    if memory and need > memory // 2:
        fits = max(1, memory // 2 // (2 * per_row))
        raise ConfigError(f"a buffer of {buffer_rows:,} rows at {len(sites)} sites takes {need / 2**30:.1f} GiB while "
                          f"it is assembled, more than half of this machine's {memory / 2**30:.1f} GiB; give "
                          f"--buffer-rows {fits:,} or fewer")


def first_rows(tokenizer, cfg: TextConfig) -> torch.Tensor:
    """The first token batch of ``cfg``'s text, or one DataError: the corpus is empty, too short or not text.

    Read before anything is written, so that a corpus with nothing to harvest leaves no manifest or folder behind.
    """
    try:
        first = next(iter(corpus_batches(tokenizer, cfg)), None)
    except UnicodeDecodeError as err:  # lmscope.data.corpus reads .txt / .json strictly as UTF-8
        raise DataError(f"corpus {cfg.corpus}: not UTF-8 text ({err.reason} at byte {err.start}); give a text file "
                        "(.txt, .json, .jsonl), a folder of .txt files or a packaged corpus") from err
    except json.JSONDecodeError as err:  # a .json / .jsonl file that is neither one JSON value nor JSON lines
        raise DataError(f"corpus {cfg.corpus}: not JSON or JSON lines ({err.msg} at line {err.lineno}); give strings "
                        "or objects with a 'text' field, or plain text in a .txt file") from err
    if first is None:
        raise DataError(f"corpus {cfg.corpus} gives no token rows of seq-len {cfg.seq_len} in split "
                        f"{cfg.split!r}: it is empty or shorter than one row; give a longer corpus (or another "
                        "--split)")
    return first


def batches_in(n: int, size: int) -> int:
    """Training batches of ``size`` rows that ``n`` rows make: a remainder of at least half a batch makes one more.

    A buffer of whole token batches loses a few positions (first, special, sink), so its rows are rarely a multiple
    of the training batch; dropping the remainder would throw away nearly one batch of harvested rows per buffer.
    """
    return (n + size // 2) // size


def batch_rows(order: torch.Tensor, b: int, size: int) -> torch.Tensor:
    """The rows of batch ``b``: order[b size : (b + 1) size], completed from the start of ``order`` past its end."""
    return order[torch.arange(b * size, (b + 1) * size) % order.numel()]


class ActivationStream:
    """Buffers of activations at ``sites``, harvested from the model or read from a disk cache."""

    def __init__(self, lm: LM, sites: Sequence[Site], config: HarvestConfig, cache: str | Path | None = None,
                 shard: tuple[int, int] = (0, 1)):
        self.lm, self.config, self.shard = lm, config, shard  # shard: (this one, of how many)
        check_sites(sites)
        self.sites = [lm.check(s) for s in sites]
        if not self.sites:
            raise ArtifactError("no site to harvest")
        lm.check_length(config.seq_len)
        self.stop = deepest_stop(self.sites)
        check_buffer_memory(lm, self.sites, config.buffer_rows)
        per_batch = config.batch_size * config.seq_len
        self.batches_per_buffer = max(1, config.buffer_rows // per_batch)
        self.n_buffers = -(-config.tokens // (per_batch * self.batches_per_buffer))
        self.cache = Path(cache) if cache else None
        if not self._all_cached(0):  # the text is needed: refuse an empty or binary corpus before writing anything
            first_rows(lm.tokenizer, config)
        if self.cache:
            self._check_cache()

    # ---- the model side --------------------------------------------------------------------------------------
    def _token_batches(self, start: int) -> Iterator[list[torch.Tensor]]:
        """Token batches grouped per buffer (every shard's), from buffer ``start`` (earlier ones tokenised, not run)."""
        batches = corpus_batches(self.lm.tokenizer, self.config)
        groups = iter(lambda: list(itertools.islice(batches, self.batches_per_buffer)), [])
        return itertools.islice(groups, start, None)

    def _run(self, ids: torch.Tensor) -> Batch:
        """Activations of one token batch at every site, special positions (and sinks) left out."""
        batch = run_batch(self.lm, ids, self.sites, self.config, self.stop)
        return {s: batch.kept(s).cpu() for s in self.sites}  # (n, d) each

    def _harvest(self, token_groups: list[torch.Tensor]) -> Batch:
        parts = [self._run(ids) for ids in token_groups]
        return {s: torch.cat([p[s] for p in parts]) for s in self.sites}

    # ---- buffers ---------------------------------------------------------------------------------------------
    def buffers(self, start: int = 0) -> Iterator[tuple[int, Batch]]:
        """(index, activations) of every buffer from ``start``, unshuffled; cached ones read from disk."""
        groups = self._token_batches(start) if not self._all_cached(start) else itertools.repeat(None)
        for index in range(start, self.n_buffers):
            group = next(groups, [])  # [] once the corpus runs out
            cached = self._read_shard(index) if self.cache else None
            if cached is None:
                if group is None:
                    group = next(self._token_batches(index), [])
                if not group:
                    self._ran_out(index)
                    return
                cached = self._harvest(self._mine(index, group))
                if self.cache:
                    self._write_shard(index, cached)
            yield index, cached

    def _mine(self, index: int, group: list[torch.Tensor]) -> list[torch.Tensor]:
        """The token batches of this shard among of a buffer's group (every ``of``-th from ``mine``)."""
        mine, of = self.shard
        if len(group) <= mine:
            raise DataError(f"buffer {index} of corpus {self.config.corpus} has {len(group)} token batches, fewer "
                            f"than the {of} shards; give a longer corpus or fewer ranks")
        return group[mine::of]

    def _ran_out(self, index: int) -> None:
        """The corpus ended before buffer ``index``: an error if nothing came of it, else a warning (fewer tokens)."""
        per_buffer = self.batches_per_buffer * self.config.batch_size * self.config.seq_len
        if index == 0:
            raise DataError(f"corpus {self.config.corpus} gives no token rows for this harvest (seq-len "
                            f"{self.config.seq_len}, shard {self.shard[0]} of {self.shard[1]}); give a longer corpus")
        log.warning("corpus %s ran out after %d of %d buffers (~%d of the %d tokens asked for)", self.config.corpus,
                    index, self.n_buffers, index * per_buffer, self.config.tokens)

    def order(self, index: int, n: int) -> torch.Tensor:
        """The shuffled order of buffer ``index``'s ``n`` rows: it depends on the seed, buffer and shard alone."""
        seed = self.config.shuffle_seed * 100_003 + index + 7_000_003 * self.shard[0]
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed))

    def epoch_buffers(self, start: int = 0, epochs: int = 1) -> Iterator[tuple[int, Batch]]:
        """(pass index, activations) over ``epochs`` passes: pass e of buffer i has index e * n_buffers + i."""
        for epoch in range(start // self.n_buffers, epochs):
            first = start % self.n_buffers if epoch == start // self.n_buffers else 0
            for index, buf in self.buffers(first):
                yield epoch * self.n_buffers + index, buf

    def batches(self, batch_tokens: int, start: tuple[int, int] = (0, 0), agree: Callable[[int], int] = int,
                epochs: int = 1) -> Iterator[tuple[tuple[int, int], Batch]]:
        """Shuffled training batches of ``batch_tokens`` rows: ((buffer pass, batch in buffer), activations).

        A buffer's last batch is completed from the start of its order (:func:`batch_rows`) when at least half a
        batch remains, and left out otherwise. ``start`` resumes at that position. ``agree`` turns this shard's
        number of batches in a buffer into the number every shard takes (the smallest, across ranks).
        Each of the ``epochs`` passes shuffles every buffer anew.
        """
        for index, buf in self.epoch_buffers(start[0], epochs):
            n = next(iter(buf.values())).shape[0]
            order = self.order(index, n)
            first = start[1] if index == start[0] else 0
            for b in range(first, agree(batches_in(n, batch_tokens))):
                rows = batch_rows(order, b, batch_tokens)
                yield (index, b), {s: x[rows] for s, x in buf.items()}

    # ---- the disk cache --------------------------------------------------------------------------------------
    def _identity(self) -> dict:
        cfg = self.config
        return {"model": self.lm.name, "fingerprint": self.lm.fingerprint(), "sites": [site_key(s) for s in self.sites],
                "shard": list(self.shard),
                "corpus": str(cfg.corpus), "split": cfg.split, "seq_len": cfg.seq_len, "batch_size": cfg.batch_size,
                "tokens": cfg.tokens, "buffer_rows": cfg.buffer_rows, "drop_special": cfg.drop_special,
                "drop_first": cfg.drop_first, "sink_factor": cfg.sink_factor}

    def _check_cache(self) -> None:
        """Refuse a cache of another model, site or setting; start a new one in an empty folder.

        The token count is not part of a harvest's identity: buffer i holds the same token batches whatever the
        length asked, so a cache serves a shorter run from its first buffers and a longer one harvests the rest.
        """
        path = self.cache / MANIFEST
        if not path.is_file():
            self.cache.mkdir(parents=True, exist_ok=True)
            write_json(path, {**self._identity(), "shards": {}})
            return
        saved = read_json(path)
        mine = self._identity()
        wrong = [k for k in mine if k != "tokens" and saved.get(k, OLD_DEFAULTS.get(k)) != mine[k]]
        if wrong:
            key = wrong[0]
            raise ArtifactError(f"the activation cache in {self.cache} belongs to another harvest ({key}: "
                                f"{saved.get(key, OLD_DEFAULTS.get(key))!r}, asked for {mine[key]!r}); use another "
                                f"folder")
        if mine["tokens"] > saved.get("tokens", 0):  # buffer i never depends on the length: a longer run extends it
            write_json(path, {**saved, "tokens": mine["tokens"]})

    def _shard(self, index: int) -> Path:
        return self.cache / f"shard-{index:05d}.safetensors"

    def _read_shard(self, index: int) -> Batch | None:
        if not self._shard(index).is_file():
            return None
        try:
            tensors = load_tensors(self._shard(index))
            return {s: tensors[site_key(s)] for s in self.sites}
        except (ArtifactError, KeyError) as err:
            log.warning("activation shard %s unreadable (%s); harvesting it again", self._shard(index), err)
            return None

    def _write_shard(self, index: int, batch: Batch) -> None:
        save_tensors(self._shard(index), {site_key(s): x for s, x in batch.items()})
        manifest = read_json(self.cache / MANIFEST)
        manifest["shards"][str(index)] = next(iter(batch.values())).shape[0]
        write_json(self.cache / MANIFEST, manifest)

    def _all_cached(self, start: int) -> bool:
        return bool(self.cache) and all(self._shard(i).is_file() for i in range(start, self.n_buffers))


def harvest(lm: LM, sites: Sequence[Site], config: HarvestConfig, out: str | Path,
            shard: tuple[int, int] = (0, 1)) -> dict:
    """Harvest every buffer into the disk cache ``out`` (resumable: finished shards are kept); returns the manifest.

    ``shard``: (rank, ranks) of a ``torchrun`` run: this rank harvests its share into ``out/rank<r>of<n>``, the
    folder :func:`lmscope.methods.sae.train_saes` reads on that rank.
    """
    folder = Path(out) / f"rank{shard[0]}of{shard[1]}" if shard[1] > 1 else Path(out)
    stream = ActivationStream(lm, sites, config, cache=folder, shard=shard)
    for _ in tqdm(stream.buffers(), total=stream.n_buffers, desc=f"harvest {lm.name}", unit="buffer"):
        pass
    return read_json(folder / MANIFEST)


class ShardedStream:
    """The global batches of a run on several ranks, made in one process: shard r's batch is rank r's.

    Each training batch is the concatenation, in rank order, of every shard's batch at the same position, so a
    single process reproduces a ``torchrun`` run exactly (up to the order of float sums).
    """

    def __init__(self, streams: list[ActivationStream]):
        self.streams = streams

    def batches(self, batch_tokens: int, start: tuple[int, int] = (0, 0),
                epochs: int = 1) -> Iterator[tuple[tuple[int, int], Batch]]:
        """Global batches of ``batch_tokens`` rows (each shard gives batch_tokens / shards)."""
        local = batch_tokens // len(self.streams)
        for parts in zip(*(s.epoch_buffers(start[0], epochs) for s in self.streams)):
            index, bufs = parts[0][0], [buf for _, buf in parts]
            sizes = [next(iter(buf.values())).shape[0] for buf in bufs]
            orders = [s.order(index, n) for s, n in zip(self.streams, sizes)]
            first = start[1] if index == start[0] else 0
            for b in range(first, min(batches_in(n, local) for n in sizes)):
                rows = [batch_rows(order, b, local) for order in orders]
                yield (index, b), {site: torch.cat([buf[site][r] for buf, r in zip(bufs, rows)])
                                   for site in bufs[0]}
