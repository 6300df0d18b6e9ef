"""Many trials at once: K configurations of the digits MLP trained with ``nets.train_many``
(``torch.func.vmap``) vs K sequential ``nets.train`` calls of the same loop (notebook 05).

Side by side in one process, float32, one thread, interleaved rounds, median times. The MLP is
64-32-10 (tanh), SGD with momentum, 100 steps of batch 64, per-configuration learning rate,
momentum and per-layer weight decay, per-configuration initialisations, one data order.
Equality with K separate trainings (float64, 1e-6) is tested in ``tests/test_nets_many.py``.

Run: ``.venv/bin/python benchmarks/nets_vmap.py`` (writes ``benchmarks/results/nets_vmap.json``).

Latest table (shared 2-core CPU, torch 2.13.0, one thread):

| K configurations | vmap [s] | sequential [s] | speed-up |
|---|---|---|---|
| 8 | 0.52 | 3.01 | 5.8x |
| 64 | 1.77 | 54.19 | **23.4x** |
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from metahpo_lib import data, nets

OUT = Path(__file__).parent / "results" / "nets_vmap.json"


def setup(K: int, dtype=torch.float32):
    s = data.load("digits", dtype=dtype)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    net = nets.network(model, s.X_train, s.y_train, s.X_val, s.y_val, optimizer="momentum", momentum=0.9,
                       steps=100, batch_size=64, lr=0.05, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    H = {"log_lr": torch.empty(K).uniform_(-5, -1, generator=g), "logit_momentum": torch.empty(K).uniform_(-1, 3, generator=g),
         "log_wd": torch.empty(K, 2).uniform_(-9, -3, generator=g)}
    H = {k: v.to(dtype) for k, v in H.items()}
    return net, H, nets.init_many(net, K, seed=1)


def sequential(net, H, P, K):
    return [nets.train(net, {k: v[i] for k, v in H.items()}, seed=0, params={k: v[i] for k, v in P.items()})
            for i in range(K)]


def main(rounds: int = 3) -> dict:
    torch.set_num_threads(1)  # one core per process: the machine is shared, and the comparison is per core
    rows = {}
    for K in (8, 64):
        net, H, P = setup(K)
        nets.train_many(net, H, seed=0, inits=P)  # warm-up
        tv, ts = [], []
        for _ in range(rounds):
            t0 = time.perf_counter(); nets.train_many(net, H, seed=0, inits=P); t1 = time.perf_counter()
            sequential(net, H, P, K); t2 = time.perf_counter()
            tv.append(t1 - t0); ts.append(t2 - t1)
        rows[K] = {"vmap_s": statistics.median(tv), "sequential_s": statistics.median(ts),
                   "speedup": statistics.median([s / v for s, v in zip(ts, tv)])}
        print(f"K = {K:>3}: vmap {rows[K]['vmap_s']:.3f} s, sequential {rows[K]['sequential_s']:.3f} s, "
              f"speed-up {rows[K]['speedup']:.1f}x", flush=True)
    OUT.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
