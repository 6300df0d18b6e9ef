"""Validation that does not lie (notebook 05): 129 hyperparameters (one L2 penalty per input feature
of a digits MLP whose inputs carry 64 extra noise features, plus one weight decay per layer) tuned
by 30 Adam steps on stochastic unrolled hypergradients, three ways: on the plain validation loss,
on a 5-fold cross-validation loss (hypergradient averaged over the folds), and on the plain
validation loss with early stopping on a second held-out split. Each final choice is trained from
4 fresh seeds and scored by its test loss; mean and 95% CI over 5 seeds (data split, noise, runs).

Run: ``.venv/bin/python benchmarks/nets_validation.py`` (about 20 minutes on a busy 2-core CPU; writes
``benchmarks/results/nets_validation.json``).

Latest table (test cross-entropy, mean ± 95% CI over 5 seeds): start 0.839 ± 0.065, plain 0.550 ± 0.070,
5-fold CV 0.373 ± 0.020, early stopping 0.589 ± 0.060; CV − plain −0.178 ± 0.073, early stopping − plain
+0.039 ± 0.034.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from metahpo_lib import data, nets, stats

OUT = Path(__file__).parent / "results" / "nets_validation.json"
ITERATIONS, META_LR, FOLDS = 30, 0.5, 5


def task(seed: int):
    """Digits + 64 noise features, re-split: train 200, validation 30, second held-out 50, test the rest."""
    s = data.load("digits", dtype=torch.float32, seed=seed)
    X, y = torch.cat([s.X_train, s.X_val, s.X_test]), torch.cat([s.y_train, s.y_val, s.y_test])
    g = torch.Generator().manual_seed(seed)
    X = torch.cat([X, 2 * torch.randn(X.shape[0], 64, generator=g)], 1)
    parts = torch.split(torch.randperm(X.shape[0], generator=g), [200, 30, 50, X.shape[0] - 280])
    (Xtr, ytr), (Xva, yva), (Xv2, yv2), (Xte, yte) = ((X[i], y[i]) for i in parts)
    net = nets.network(nn.Sequential(nn.Linear(128, 32), nn.Tanh(), nn.Linear(32, 10)), Xtr, ytr, Xva, yva,
                       optimizer="adam", lr=0.01, steps=60, batch_size=50, weight_decay=1e-4, feature_decay=1e-4)
    return net, (Xv2, yv2), (Xte, yte)


def test_loss(net, hparams, test, seed):
    H = nets.stack_configs([hparams] * 4)
    P = nets.train_many(net, H, seed=seed)
    return float(nets.evaluate_many(net, P, H, *test)[0].mean())


def tune(net, hypergradient, second, test):
    """Outer Adam; records the validation loss and, at the same trained params, the second-split and test losses."""
    trace = {"val": [], "second": [], "test": [], "hparams": []}

    def step(h, k):
        g = hypergradient(h, k)
        if "params" in g.info:
            trace["second"].append(net.evaluate(g.info["params"], h, *second)[0])
            trace["test"].append(net.evaluate(g.info["params"], h, *test)[0])
        trace["val"].append(g.info["outer_loss"])
        trace["hparams"].append(h)
        return g

    run = nets.outer_descent(step, net.init_hparams(), iterations=ITERATIONS, meta_lr=META_LR, keys=["log_fd", "log_wd"])
    return run, trace


def one_seed(seed: int) -> dict:
    net, second, test = task(seed)
    g = torch.Generator().manual_seed(seed)
    plain, tr = tune(net, lambda h, k: nets.unrolled(net, h, seed=g), second, test)
    folds = nets.fold_problems(net, FOLDS, seed=seed)
    cv, _ = tune(net, lambda h, k: nets.cv_hypergradient(folds, h, seed=100 * seed + k), second, test)
    best = min(range(len(tr["second"])), key=tr["second"].__getitem__)
    out = {"start": test_loss(net, net.init_hparams(), test, seed), "plain": test_loss(net, plain.hparams, test, seed),
           "cv": test_loss(net, cv.hparams, test, seed),
           "early_stopping": test_loss(net, tr["hparams"][best], test, seed), "stopped_at": best,
           "curves": {k: tr[k] for k in ("val", "second", "test")}}
    return out


def main(seeds: int = 5) -> dict:
    torch.set_num_threads(1)  # one core per process: the machine is shared
    t0, rows = time.perf_counter(), []
    for seed in range(seeds):
        rows.append(one_seed(seed))
        print(f"seed {seed}: " + ", ".join(f"{k} {rows[-1][k]:.4f}" for k in ("start", "plain", "cv", "early_stopping"))
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = {k: stats.mean_ci([r[k] for r in rows])._asdict() for k in ("start", "plain", "cv", "early_stopping")}
    summary["cv_minus_plain"] = stats.mean_ci([r["cv"] - r["plain"] for r in rows])._asdict()
    summary["es_minus_plain"] = stats.mean_ci([r["early_stopping"] - r["plain"] for r in rows])._asdict()
    print(json.dumps(summary, indent=1))
    OUT.write_text(json.dumps({"seeds": seeds, "summary": summary, "rows": rows}, indent=1))
    return summary


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
