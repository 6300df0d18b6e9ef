"""Chapter 07, part 1: meta-optimisers for network hyperparameters against per-task search.
Writes ``benchmarks/results/meta_hpo_nets.json`` (loaded by ``notebooks/07_meta_learning_hpo.ipynb``)
and prints the tables.

    python benchmarks/meta_hpo_nets.py            # 40 min (2400 s) on 2 cores shared with one other job (2 processes)
    python benchmarks/meta_hpo_nets.py --quick    # a smoke run (tiny sizes, saves nothing): 26 s on the idle machine, ~2.5 min under load
    python benchmarks/meta_hpo_nets.py --tables   # print the tables of the saved results

Protocol (version 2; nothing is tuned on the held-out tasks it reports). Version 1 (36 meta-train
tasks, batches of 4, 30 iterations, 6 held-out tasks drawn with seed 1, same-run regret only) was run
and its held-out results seen; version 2 draws new held-out and OOD tasks (seeds 11 and 12),
meta-trains longer on more tasks, and adds the re-trained regret. These changes were chosen from
version 1's results and from development runs on meta-train sources only (a shared setting and a
predictor meta-trained on digits_0to4 + breast_cancer, tested on blobs tasks).

- Tasks (``metahpo_lib.meta``): 60 meta-train tasks from the sources digits_0to4, breast_cancer,
  blobs (20 each); 12 meta-test tasks from digits_5to9, wine, hypercube (4 each); 6
  out-of-distribution tasks from the same held-out sources with input scale 3-6 (meta-training
  saw 0.5-2). ``meta.check_split`` checks that no held-out source made a meta-training task.
  Each held-out task is run with run seeds 0 and 1: a run seed fixes the minibatch order and the
  initialisation of every training on that task, the same for every method, and seeds the searches.
- Hyperparameters: the 25 of ``meta.SPACE`` (20-phase lr schedule, 3 weight decays, momentum,
  label smoothing), the same space for every method; 40 momentum-SGD steps of batch 32.
- Meta-optimisers, meta-trained on the meta-train tasks only (Adam via ``hpo.descend``, random run
  seeds; the mean validation loss on 8 meta-train tasks is recorded every 5 iterations): shared
  setting (60 iterations, batches of 8, meta_lr 0.1, from ``meta.DEFAULT``); predictor (60
  iterations, batches of 8, meta_lr 0.05, from the shared setting); MAML-style ``MetaHGD`` with
  k = 2 cheap steps (20-step trainings), second and first order (20 iterations, batches of 4,
  meta_lr 0.1, step sizes started at 3, from the shared setting). At meta-test: shared and
  predictor cost 1 training; MetaHGD with k steps costs 1 + k * r_cheap trainings (k = 1, 2, 3),
  r_cheap = the measured time of one cheap hypergradient over the time of one training.
- Baselines (per task, from scratch): random search (its first configurations are those of the
  reference search), Optuna TPE and GP, hypergradient descent from ``meta.DEFAULT`` (one step costs
  r_full = measured time of a hypergradient through a full training / one training), and
  hypergradient descent from the shared setting ("shared+hgd": the zero-shot training, then
  steps). One run of budget 50 each; incumbent curves read at budgets 1, 5, 10, 25, 50.
- Scores (``meta.compare``): a method's incumbent at budget B is its lowest-validation-loss
  configuration paid within B. Same-run test regret = its test cross-entropy on the run that chose
  it - the best test cross-entropy of everything evaluated on that task and run seed (a
  300-configuration random search included). Re-trained test regret = its test cross-entropy
  averaged over 4 fresh run seeds (1000 + 10 * seed + 0..3, used by no method) - the best such
  average among every incumbent, every meta-optimiser point and the reference search's 20 best by
  validation loss. Mean and 95% Student-t interval (``stats.mean_ci``) over task x seed runs; "-"
  where a method cannot spend so little.

Latest results (CPU, 1 thread per process, 2 processes on a 2-core machine shared with one other
job; 2400 s in all):

    test tasks (24 task x seed runs): same-run test regret, mean [95% CI] at budget
    method                             1                       5                      10                      25                      50
    random          1.727 [1.079, 2.375]    0.503 [0.363, 0.644]    0.176 [0.105, 0.246]    0.155 [0.097, 0.212]    0.107 [0.079, 0.135]
    tpe             2.430 [1.589, 3.270]    0.206 [0.137, 0.275]    0.204 [0.135, 0.274]    0.124 [0.086, 0.162]    0.106 [0.061, 0.150]
    gp              2.430 [1.589, 3.270]    0.206 [0.137, 0.275]    0.204 [0.135, 0.274]    0.122 [0.092, 0.152]    0.115 [0.091, 0.140]
    hgd                    -                0.109 [0.089, 0.130]    0.087 [0.066, 0.108]   0.166 [-0.009, 0.342]   0.156 [-0.019, 0.330]
    shared+hgd      0.149 [0.109, 0.188]    0.115 [0.084, 0.146]    0.098 [0.077, 0.118]    0.080 [0.054, 0.105]    0.069 [0.040, 0.097]
    meta-optimisers (one point each): method, cost in trainings, test regret
      shared       1.00      0.149 [0.109, 0.188]
      predictor    1.00      0.118 [0.092, 0.144]
      maml0        1.00      0.137 [0.100, 0.174]
      maml1        1.83      0.134 [0.094, 0.174]
      maml2        2.67      0.140 [0.099, 0.181]
      maml3        3.50      0.148 [0.104, 0.192]
      fomaml0      1.00      0.274 [0.164, 0.383]
      fomaml1      1.83      0.190 [0.123, 0.256]
      fomaml2      2.67      0.135 [0.098, 0.173]
      fomaml3      3.50      0.121 [0.091, 0.150]

    ood tasks (12 task x seed runs): same-run test regret, mean [95% CI] at budget
    method                             1                       5                      10                      25                      50
    random          3.030 [1.749, 4.311]    0.765 [0.476, 1.054]    0.490 [0.220, 0.760]   0.728 [-0.119, 1.575]    0.264 [0.079, 0.448]
    tpe             3.038 [1.919, 4.157]    0.680 [0.392, 0.968]    0.570 [0.292, 0.848]    0.461 [0.174, 0.749]    0.387 [0.084, 0.690]
    gp              3.038 [1.919, 4.157]    0.680 [0.392, 0.968]    0.570 [0.292, 0.848]    0.194 [0.085, 0.304]    0.143 [0.031, 0.254]
    hgd                    -                0.107 [0.055, 0.159]    0.071 [0.025, 0.116]    0.071 [0.034, 0.108]    0.048 [0.013, 0.082]
    shared+hgd      0.274 [0.113, 0.435]    0.217 [0.100, 0.335]    0.183 [0.060, 0.305]    0.061 [0.028, 0.094]    0.047 [0.017, 0.077]
    meta-optimisers (one point each): method, cost in trainings, test regret
      shared       1.00      0.274 [0.113, 0.435]
      predictor    1.00      0.123 [0.060, 0.187]
      maml0        1.00      0.865 [0.012, 1.718]
      maml1        1.83     0.835 [-0.028, 1.697]
      maml2        2.67     0.809 [-0.114, 1.733]
      maml3        3.50     0.836 [-0.104, 1.777]
      fomaml0      1.00      0.158 [0.065, 0.251]
      fomaml1      1.83      0.178 [0.083, 0.274]
      fomaml2      2.67      0.182 [0.083, 0.281]
      fomaml3      3.50      0.176 [0.077, 0.275]

    test tasks (24 task x seed runs): re-trained test regret (4 fresh runs), mean [95% CI] at budget
    method                             1                       5                      10                      25                      50
    random          1.911 [1.337, 2.484]    0.701 [0.391, 1.010]    0.233 [0.073, 0.393]    0.208 [0.113, 0.304]    0.232 [0.108, 0.355]
    tpe             2.234 [1.489, 2.978]    0.287 [0.140, 0.434]    0.370 [0.199, 0.542]    0.216 [0.086, 0.346]    0.242 [0.131, 0.353]
    gp              2.234 [1.489, 2.978]    0.287 [0.140, 0.434]    0.370 [0.199, 0.542]    0.187 [0.072, 0.303]    0.242 [0.137, 0.347]
    hgd                    -                0.049 [0.036, 0.061]    0.063 [0.044, 0.082]    0.175 [0.022, 0.328]    0.245 [0.069, 0.421]
    shared+hgd      0.064 [0.044, 0.084]    0.041 [0.025, 0.058]    0.045 [0.031, 0.060]    0.064 [0.044, 0.084]    0.098 [0.061, 0.134]
    meta-optimisers (one point each): method, cost in trainings, test regret
      shared       1.00      0.064 [0.044, 0.084]
      predictor    1.00      0.035 [0.019, 0.051]
      maml0        1.00      0.055 [0.038, 0.071]
      maml1        1.83      0.046 [0.029, 0.062]
      maml2        2.67      0.053 [0.038, 0.068]
      maml3        3.50      0.055 [0.040, 0.069]
      fomaml0      1.00      0.195 [0.082, 0.308]
      fomaml1      1.83      0.112 [0.047, 0.178]
      fomaml2      2.67      0.056 [0.028, 0.083]
      fomaml3      3.50      0.040 [0.028, 0.051]

    ood tasks (12 task x seed runs): re-trained test regret (4 fresh runs), mean [95% CI] at budget
    method                             1                       5                      10                      25                      50
    random          2.599 [1.491, 3.707]    1.649 [0.915, 2.384]    1.022 [0.294, 1.751]    0.887 [0.189, 1.586]    0.347 [0.152, 0.542]
    tpe             3.043 [1.956, 4.130]    1.165 [0.515, 1.815]    0.892 [0.574, 1.210]    1.070 [0.316, 1.825]    0.906 [0.356, 1.455]
    gp              3.043 [1.956, 4.130]    1.165 [0.515, 1.815]    0.892 [0.574, 1.210]    0.410 [0.213, 0.608]    0.382 [0.062, 0.703]
    hgd                    -               0.150 [-0.081, 0.382]    0.036 [0.016, 0.056]    0.099 [0.019, 0.180]    0.176 [0.030, 0.323]
    shared+hgd      0.253 [0.118, 0.387]    0.189 [0.066, 0.312]   0.188 [-0.006, 0.382]    0.161 [0.013, 0.308]    0.197 [0.032, 0.362]
    meta-optimisers (one point each): method, cost in trainings, test regret
      shared       1.00      0.253 [0.118, 0.387]
      predictor    1.00      0.041 [0.004, 0.077]
      maml0        1.00      0.529 [0.253, 0.804]
      maml1        1.83      1.044 [0.058, 2.030]
      maml2        2.67      0.665 [0.023, 1.307]
      maml3        3.50      0.400 [0.035, 0.764]
      fomaml0      1.00      0.078 [0.009, 0.148]
      fomaml1      1.83      0.070 [0.007, 0.133]
      fomaml2      2.67      0.077 [0.017, 0.137]
      fomaml3      3.50      0.082 [0.019, 0.146]

    test: fresh runs that diverged, of 96, for the incumbent at B=50 (meta-optimisers: their one configuration): random 0, tpe 0, gp 0, hgd 0, shared+hgd 0, shared 0, predictor 0

    ood: fresh runs that diverged, of 48, for the incumbent at B=50 (meta-optimisers: their one configuration): random 0, tpe 2, gp 1, hgd 0, shared+hgd 0, shared 0, predictor 0

    cost ratios: hypergradient through a full training = 1.64 trainings, through a cheap (20-step) training = 0.83; one training 101 ms
    meta-training: shared 83 s (480 hypergradients), predictor 86 s (480 hypergradients), maml 54 s (240 hypergradients), fomaml 40 s (240 hypergradients)
    run time 2400 s
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metahpo_lib import meta, stats  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BUDGETS = (1, 5, 10, 25, 50)
FULL = dict(n_train=60, n_test=12, n_ood=6, seeds=(0, 1), budget=50, n_ref=300, it_shared=60, it_pred=60, it_maml=20,
            batch=8, jobs=2, n_monitor=8, monitor_every=5)
QUICK = dict(n_train=6, n_test=2, n_ood=2, seeds=(0, 1), budget=6, n_ref=30, it_shared=2, it_pred=2, it_maml=1,
             batch=2, jobs=2, n_monitor=2, monitor_every=1)
META_METHODS = ("shared", "predictor", "maml1", "maml2", "maml3", "fomaml1", "fomaml2", "fomaml3")
CURVE_METHODS = ("random", "tpe", "gp", "hgd", "shared+hgd")
N_FRESH, FRESH_BASE, N_REF_RETRAIN = 4, 1000, 20


def task_sets(n_train, n_test, n_ood):
    """(meta-train specs, meta-test specs, OOD specs), seeded."""
    train = meta.sample_specs(meta.META_TRAIN_SOURCES, n_train, seed=0)
    test = meta.sample_specs(meta.META_TEST_SOURCES, n_test, seed=11)
    ood = meta.sample_specs(meta.META_TEST_SOURCES, n_ood, seed=12, ood=True)
    return train, test, ood


def cost_ratios(task, repeats=5):
    """(r_full, r_cheap): hypergradient time through a full / cheap training over one training's time."""
    v = meta.to_vector(meta.DEFAULT)
    t_train, t_full, t_cheap = [], [], []
    meta.hypergradient(task, v, 0), meta.evaluate(task, v[None], 0), meta.hypergradient(task, v, 0, steps=20)
    for s in range(repeats):
        for lst, fn in ((t_train, lambda: meta.evaluate(task, v[None], s)), (t_full, lambda: meta.hypergradient(task, v, s)),
                        (t_cheap, lambda: meta.hypergradient(task, v, s, steps=meta.CHEAP_STEPS))):
            t0 = time.perf_counter()
            fn()
            lst.append(time.perf_counter() - t0)
    tr = statistics.median(t_train)
    return statistics.median(t_full) / tr, statistics.median(t_cheap) / tr, tr


def meta_train_all(train_tasks, cfg, progress):
    """Meta-train the four meta-optimisers; returns them and their wall times."""
    times = {}
    t0 = time.perf_counter()
    watch = dict(monitor=train_tasks[:cfg["n_monitor"]], monitor_every=cfg["monitor_every"])
    shared = meta.SharedSetting().meta_train(train_tasks, iterations=cfg["it_shared"], batch=cfg["batch"], meta_lr=0.1, seed=0,
                                             progress=progress, **watch)
    times["shared"] = time.perf_counter() - t0
    start = meta.to_config(shared.v)
    t0 = time.perf_counter()
    pred = meta.HyperPredictor(start).meta_train(train_tasks, iterations=cfg["it_pred"], batch=cfg["batch"], seed=1,
                                                 progress=progress,
                                                 **watch)
    times["predictor"] = time.perf_counter() - t0
    mamls = {}
    for name, fo in (("maml", False), ("fomaml", True)):
        t0 = time.perf_counter()
        mamls[name] = meta.MetaHGD(start, k=2, first_order=fo).meta_train(train_tasks, iterations=cfg["it_maml"],
                                                                           seed=2, progress=progress, **watch)
        times[name] = time.perf_counter() - t0
    return shared, pred, mamls, times


def _state(shared, pred, mamls):
    return {"shared": shared.v.tolist(), "predictor": {"W": pred.W.tolist(), "b": pred.v.tolist(),
                                                       "mu": pred.mu.tolist(), "sd": pred.sd.tolist()},
            **{n: {"init": m.init.tolist(), "log_step": m.log_step.tolist()} for n, m in mamls.items()}}


def _fresh_seeds(seed):
    """The run seeds of the re-trained score for run ``seed``: no method trains on them."""
    return [FRESH_BASE + 10 * seed + r for r in range(N_FRESH)]


def _searches(task, seed, cfg, r_full, shared):
    """Every per-task search on one task and run seed: {method: {"vals", "tests", "costs", "C" (n, 25)}}."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ref = meta.random_configs(cfg["n_ref"], seed=seed)
    ref_val, ref_test = meta.evaluate(task, ref, seed)
    runs = {"random": {"vals": ref_val[:cfg["budget"]].tolist(), "tests": ref_test[:cfg["budget"]].tolist(),
                       "costs": [1.0] * cfg["budget"], "C": ref[:cfg["budget"]]}}
    for m in ("tpe", "gp", "hgd"):
        runs[m] = meta.run_search(m, task, seed, cfg["budget"], hypergradient_cost=r_full)
    hg = meta.run_search("hgd", task, seed, cfg["budget"] - 1, start=meta.to_config(shared), hypergradient_cost=r_full)
    runs["shared+hgd"] = {k: hg[k] for k in ("vals", "tests", "costs", "configs")}
    for r in runs.values():
        if "C" not in r:
            configs = r.pop("configs")
            r["C"] = torch.stack([meta.to_vector(c) for c in configs]) if configs else torch.zeros(0, len(meta.KEYS))
    return runs, (ref, ref_val, ref_test)


def _meta_points(task, seed, state, r_cheap):
    """{name: (configuration (25,), cost in trainings)} of the meta-optimisers on one task and run seed."""
    shared = torch.tensor(state["shared"], dtype=torch.float64)
    pred = meta.HyperPredictor()
    pred.W, pred.v = torch.tensor(state["predictor"]["W"]).double(), torch.tensor(state["predictor"]["b"]).double()
    pred.mu, pred.sd = torch.tensor(state["predictor"]["mu"]).double(), torch.tensor(state["predictor"]["sd"]).double()
    points = {"shared": (shared, 1.0), "predictor": (pred.predict(task.features), 1.0)}
    for name in ("maml", "fomaml"):
        m = meta.MetaHGD()
        m.init, m.log_step = (torch.tensor(state[name][k]).double() for k in ("init", "log_step"))
        path = m.adapt(task, seed, 3)
        points.update({f"{name}{k}": (path[k], m.cheap_cost(r_cheap, k)) for k in (0, 1, 2, 3)})
    return points


def one_run(args):
    """Every method on one held-out task and run seed: both test regrets at the budgets (module docstring)."""
    spec, seed, state, cfg, r_full, r_cheap = args
    torch.set_num_threads(1)
    task = meta.make_task(spec)
    shared = torch.tensor(state["shared"], dtype=torch.float64)
    runs, (ref, ref_val, ref_test) = _searches(task, seed, cfg, r_full, shared)
    points = _meta_points(task, seed, state, r_cheap)
    P = torch.stack([v for v, _ in points.values()])
    pv, pt = meta.evaluate(task, P, seed)
    sh = runs["shared+hgd"]  # the zero-shot training comes first, then the steps
    runs["shared+hgd"] = {"vals": [float(pv[0])] + sh["vals"], "tests": [float(pt[0])] + sh["tests"],
                          "costs": [1.0] + sh["costs"], "C": torch.cat([shared[None], sh["C"]])}
    best = min([float(ref_test.min()), float(pt.min())] + [min(r["tests"]) for r in runs.values() if r["tests"]])
    out = {m: meta.incumbent_regret(r["vals"], r["tests"], r["costs"], BUDGETS, best).tolist() for m, r in runs.items()}
    # re-trained: every incumbent, every meta-optimiser point and the reference search's top 20 on fresh seeds
    inc = {m: meta.incumbents(r["vals"], r["costs"], BUDGETS) for m, r in runs.items()}
    rows = {m: [None if i is None else runs[m]["C"][i] for i in inc[m]] for m in runs}
    cands = [c for m in runs for c in rows[m] if c is not None]
    C = torch.cat([torch.stack(cands), P, ref[ref_val.argsort()[:N_REF_RETRAIN]]])
    T = meta.retrain(task, C, _fresh_seeds(seed))
    F, best_f = T.mean(1), float(T.mean(1).min())
    at, out["retrained"], out["diverged"] = iter(range(len(cands))), {}, {}
    for m in runs:
        idx = [None if c is None else next(at) for c in rows[m]]
        out["retrained"][m] = [math.nan if j is None else float(F[j]) - best_f for j in idx]
        out["diverged"][m] = int((T[idx[-1]] >= meta.CAP).sum())  # fresh runs of the incumbent at the last budget
    out.update({n: {"regret": float(pt[i]) - best, "retrained": float(F[len(cands) + i]) - best_f, "cost": c,
                    "val": float(pv[i]), "diverged": int((T[len(cands) + i] >= meta.CAP).sum())}
                for i, (n, (_, c)) in enumerate(points.items())})
    out["hgd_iterations"] = len(runs["hgd"]["vals"])
    return out


def _ci_lists(R):
    """{"mean", "lo", "hi"} lists over the columns of ``R`` (runs x budgets); None where a column has NaN."""
    out = {"mean": [], "lo": [], "hi": []}
    for col in R.T:
        ci = None if np.isnan(col).any() else stats.mean_ci(col)
        for key, val in (("mean", ci and ci.mean), ("lo", ci and ci.low), ("hi", ci and ci.high)):
            out[key].append(None if ci is None else float(val))
    return out


def summarise(runs, measure="same"):
    """{method: {"mean": [...], "lo": [...], "hi": [...]}} over runs for one measure ("same" or
    "retrained"; None where undefined), and {"mean", "lo", "hi", "cost"} for each meta-optimiser."""
    get = (lambda r: r) if measure == "same" else (lambda r: r["retrained"])
    out = {m: _ci_lists(np.array([get(r)[m] for r in runs], dtype=float)) for m in CURVE_METHODS}
    key = "regret" if measure == "same" else "retrained"
    for m in META_METHODS + ("maml0", "fomaml0"):
        ci = stats.mean_ci([r[m][key] for r in runs])
        out[m] = {"mean": float(ci.mean), "lo": float(ci.low), "hi": float(ci.high), "cost": runs[0][m]["cost"]}
    return out


def _cell(mean, lo, hi):
    return "-".center(24) if mean is None else f"{mean:.3f} [{lo:.3f}, {hi:.3f}]".rjust(24)


def tables(res) -> str:
    lines = []
    for measure, title in (("same", "same-run test regret"), ("retrained", f"re-trained test regret ({N_FRESH} fresh runs)")):
        for group in ("test", "ood"):
            s, n = res["summary"][measure][group], len(res["runs"][group])
            lines.append(f"\n{group} tasks ({n} task x seed runs): {title}, mean [95% CI] at budget")
            lines.append("method".ljust(12) + "".join(f"{b:>24}" for b in BUDGETS))
            for m in CURVE_METHODS:
                lines.append(m.ljust(12) + "".join(_cell(s[m]["mean"][j], s[m]["lo"][j], s[m]["hi"][j])
                                                   for j in range(len(BUDGETS))))
            lines.append("meta-optimisers (one point each): method, cost in trainings, test regret")
            for m in ("shared", "predictor") + tuple(f"{p}{k}" for p in ("maml", "fomaml") for k in (0, 1, 2, 3)):
                lines.append(f"  {m:<10} {s[m]['cost']:6.2f}  {_cell(s[m]['mean'], s[m]['lo'], s[m]['hi'])}")
    for group in ("test", "ood"):
        R = res["runs"][group]
        div = {m: sum(r["diverged"][m] for r in R) for m in CURVE_METHODS}
        div.update({m: sum(r[m]["diverged"] for r in R) for m in ("shared", "predictor")})
        lines.append(f"\n{group}: fresh runs that diverged, of {N_FRESH * len(R)}, for the incumbent at B={BUDGETS[-1]} "
                     "(meta-optimisers: their one configuration): " + ", ".join(f"{m} {v}" for m, v in div.items()))
    r = res["ratios"]
    lines.append(f"\ncost ratios: hypergradient through a full training = {r['full']:.2f} trainings, through a "
                 f"cheap (20-step) training = {r['cheap']:.2f}; one training {1000 * r['train_s']:.0f} ms")
    lines.append("meta-training: " + ", ".join(f"{k} {v:.0f} s ({res['hypergradients'][k]} hypergradients)"
                                               for k, v in res["meta_train_s"].items()))
    lines.append(f"run time {res['seconds']:.0f} s")
    return "\n".join(lines)


def run(cfg, progress=True):
    t_start = time.perf_counter()
    torch.set_num_threads(1)
    tr_specs, te_specs, ood_specs = task_sets(cfg["n_train"], cfg["n_test"], cfg["n_ood"])
    train_tasks = meta.make_tasks(tr_specs)
    meta.check_split(train_tasks, meta.make_tasks(te_specs + ood_specs), test_name="a held-out task")
    r_full, r_cheap, t_train = cost_ratios(train_tasks[0])
    print(f"cost ratios: full {r_full:.2f}, cheap {r_cheap:.2f} (one training {t_train * 1000:.0f} ms)", flush=True)
    shared, pred, mamls, times = meta_train_all(train_tasks, cfg, progress)
    state = _state(shared, pred, mamls)
    jobs = [(s, seed, state, cfg, r_full, r_cheap) for s in te_specs + ood_specs for seed in cfg["seeds"]]
    with ProcessPoolExecutor(cfg["jobs"], mp_context=get_context("fork")) as ex:
        done = []
        for i, r in enumerate(ex.map(one_run, jobs)):
            done.append(r)
            print(f"  run {i + 1}/{len(jobs)} done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    n_te = len(te_specs) * len(cfg["seeds"])
    runs = {"test": done[:n_te], "ood": done[n_te:]}
    return {"protocol": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}, "budgets": list(BUDGETS),
            "specs": {"train": [vars(s) for s in tr_specs], "test": [vars(s) for s in te_specs],
                      "ood": [vars(s) for s in ood_specs]},
            "ratios": {"full": r_full, "cheap": r_cheap, "train_s": t_train},
            "curves": {"shared": shared.curve, "predictor": pred.curve, **{n: m.curve for n, m in mamls.items()}},
            "monitor": {"shared": shared.monitor, "predictor": pred.monitor, **{n: m.monitor for n, m in mamls.items()}},
            "hypergradients": {"shared": shared.hypergradients, "predictor": pred.hypergradients,
                               **{n: m.hypergradients for n, m in mamls.items()}},
            "meta_train_s": times, "state": state, "runs": runs,
            "summary": {m: {g: summarise(r, m) for g, r in runs.items()} for m in ("same", "retrained")},
            "seconds": time.perf_counter() - t_start}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, prints the tables, saves nothing")
    p.add_argument("--tables", action="store_true", help="print the tables of the saved results")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here (also with --quick)")
    a = p.parse_args(argv)
    path = a.out or RESULTS / "meta_hpo_nets.json"
    if a.tables:
        print(tables(json.loads(path.read_text())))
        return
    res = run(QUICK if a.quick else FULL, progress=not a.quick)
    print(tables(res))
    if not a.quick or a.out:
        path.write_text(json.dumps(res, separators=(",", ":")))
        print(f"wrote {path} ({os.path.getsize(path) // 1024} KiB)")


if __name__ == "__main__":
    main()
