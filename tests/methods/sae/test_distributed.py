"""torchrun with 2 CPU processes (gloo) gives the SAEs of a single process fed the same global batches."""

import os
import socket
import subprocess
import sys

import torch

from lmscope import Site
from lmscope.io import load_tensors, read_json
from lmscope.methods.sae import Job, SaeConfig, train_saes
from tests.helpers import ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_equal_one_process_with_the_same_global_batches(lm, corpus, harvest_cfg, train_cfg, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "LMSCOPE_CACHE": str(tmp_path / "store")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(ROOT / "tests/methods/sae/ddp_run.py"), corpus,
           str(tmp_path / "ddp")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = [Job(Site(1, "resid_post"), SaeConfig("tied", ratio=2)), Job(Site(1, "resid_post"), SaeConfig("topk", k=4))]
    single = train_saes(lm, jobs, harvest_cfg, train_cfg, tmp_path / "one", shards=2)
    for path in single:
        ddp_path = tmp_path / "ddp" / path.name
        a, b = load_tensors(path / "sae.safetensors"), load_tensors(ddp_path / "sae.safetensors")
        for name in a:
            torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4, msg=f"{path.name}: {name}")
        steps = read_json(path / "cfg.json")["steps"]
        assert steps == read_json(ddp_path / "cfg.json")["steps"] > 10
