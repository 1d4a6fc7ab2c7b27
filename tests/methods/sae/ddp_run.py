"""Run by tests/methods/sae/test_distributed.py under torchrun: train a sweep of tiny SAEs on 2 CPU ranks (gloo)."""

import sys

from lmscope import Site
from lmscope.methods.sae import HarvestConfig, Job, SaeConfig, TrainConfig, train_saes
from tests.helpers import tiny_lm

corpus, out = sys.argv[1], sys.argv[2]
harvest_cfg = HarvestConfig(corpus=corpus, split="all", seq_len=16, batch_size=4, tokens=2048, buffer_rows=512)
train_cfg = TrainConfig(batch_tokens=64, warmup_steps=3, checkpoint_every=5, dead_tokens=256)
jobs = [Job(Site(1, "resid_post"), SaeConfig("tied", ratio=2)), Job(Site(1, "resid_post"), SaeConfig("topk", k=4))]
train_saes(tiny_lm(), jobs, harvest_cfg, train_cfg, out)
