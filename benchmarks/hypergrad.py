"""Unrolled hypergradients: ours vs ``higher``, and reverse vs forward mode (notebook 03).

Problem: multinomial logistic regression on *digits* (``problems.logistic``, 1078 training
images, 64 pixels, 10 classes, 650 weights), one hyperparameter ``log_alpha`` = log(0.05),
float64, plain gradient descent with lr = 0.5 from zero weights, ``T`` steps.

Table 1: time of one full reverse-mode hypergradient (unroll T steps + backward), ours
(``hypergrad.unrolled(mode="reverse")``) vs ``higher.innerloop_ctx`` with ``torch.optim.SGD``
on the same model written as an ``nn.Module`` (optional dependency: rows skipped when
``higher`` is absent; ``pip install --no-deps higher``). Both give the same hypergradient
(checked, relative difference printed). Calls are interleaved round by round in one process,
median over rounds, one thread.

Table 2: time and peak memory of reverse vs forward mode (``mode="forward"``, torch.func.jvp)
as T grows. Peak memory = bytes torch allocated above the starting point: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the profiler's allocation records summed in time
order (``metahpo_lib.env.peak_memory``). Times of table 2 are single unprofiled runs.

At the end, runs ``benchmarks/hypergrad_implicit.py``'s ``main()`` when that file exists.
Run ``python -m benchmarks.hypergrad`` (``--quick`` for a smoke run). Latest tables (CPU,
1 thread, shared 2-core VM, so timings are noisy; 2026-11-23, torch 2.13.0+cpu, higher 0.2.1,
3 rounds)::

    Table 1: reverse-mode unrolled hypergradient, ours vs higher.innerloop_ctx (median of rounds)
         T   ours [s]  higher [s]  ours / higher  rel. diff of hypergradients
       100      0.181       0.178           1.01                      1.9e-16
      1000      2.421       4.188           0.58                      0.0e+00

    Table 2: reverse vs forward mode as T grows (peak memory above start)
         T  reverse [s]  forward [s]  reverse [MiB]  forward [MiB]  rev/fwd memory
        25        0.059        0.257           4.92           0.99             5.0
        50        0.084        0.579           9.40           0.99             9.5
       100        0.240        0.946          18.36           0.99            18.6
       200        0.470        1.869          36.28           0.99            36.7
       400        0.717        3.563          72.11           0.99            72.8

Reverse mode costs about 0.18 MiB per step here and forward mode a flat 0.99 MiB; forward mode
is 4-7 times slower per step on this CPU (the overhead of ``torch.func.jvp`` over
``torch.func.grad`` on a small model), so it pays off when memory, not time, is the limit.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from metahpo_lib import data, env, hypergrad, inner, problems
from metahpo_lib.env import peak_memory

LR = 0.5
LOG_ALPHA = math.log(0.05)


def setup(device):
    s = data.load("digits", seed=0, device=device)
    problem = problems.logistic(s.X_train, s.y_train, s.X_val, s.y_val, log_alpha=LOG_ALPHA)
    return s, problem


def ours(problem, T):
    def run():
        return hypergrad.unrolled(problem, problem.init_hparams(), inner.GD(LR), steps=T)["log_alpha"]
    return run


def with_higher(s, T, device):
    import higher

    def run():
        model = torch.nn.Linear(64, 10, dtype=torch.float64, device=device)
        torch.nn.init.zeros_(model.weight)
        torch.nn.init.zeros_(model.bias)
        log_alpha = torch.tensor(LOG_ALPHA, dtype=torch.float64, device=device, requires_grad=True)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        with higher.innerloop_ctx(model, opt, copy_initial_weights=True) as (fmodel, diffopt):
            for _ in range(T):
                loss = F.cross_entropy(fmodel(s.X_train), s.y_train) + 0.5 * log_alpha.exp() * fmodel.weight.pow(2).sum()
                diffopt.step(loss)
            outer = F.cross_entropy(fmodel(s.X_val), s.y_val)
            return torch.autograd.grad(outer, log_alpha)[0]
    return run


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def table_higher(s, problem, device, Ts, rounds):
    try:
        import higher  # noqa: F401
    except ImportError:
        return ["higher is not installed: skipping the comparison (pip install --no-deps higher)"]
    lines = [f"{'T':>6} {'ours [s]':>10} {'higher [s]':>11} {'ours / higher':>14} {'rel. diff of hypergradients':>28}"]
    for T in Ts:
        fns = {"ours": ours(problem, T), "higher": with_higher(s, T, device)}
        for fn in fns.values():  # warm-up
            fn()
        times = {k: [] for k in fns}
        outs = {}
        for _ in range(rounds):
            for k, fn in fns.items():
                dt, outs[k] = timed(fn, device)
                times[k].append(dt)
        med = {k: statistics.median(v) for k, v in times.items()}
        diff = float((outs["ours"] - outs["higher"]).abs() / outs["higher"].abs())
        lines.append(f"{T:>6} {med['ours']:>10.3f} {med['higher']:>11.3f} {med['ours'] / med['higher']:>14.2f} {diff:>28.1e}")
    return lines


def table_modes(problem, device, Ts):
    h = problem.init_hparams()
    hypergrad.unrolled(problem, h, inner.GD(LR), steps=2, mode="forward")  # warm-up
    lines = [f"{'T':>6} {'reverse [s]':>12} {'forward [s]':>12} {'reverse [MiB]':>14} {'forward [MiB]':>14} "
             f"{'rev/fwd memory':>15}"]
    for T in Ts:
        row = {}
        for mode in ("reverse", "forward"):
            def fn():
                return hypergrad.unrolled(problem, h, inner.GD(LR), steps=T, mode=mode)
            dt, _ = timed(fn, device)
            row[mode] = (dt, peak_memory(fn, device) / 2**20)
        (rt, rm), (ft, fm) = row["reverse"], row["forward"]
        lines.append(f"{T:>6} {rt:>12.3f} {ft:>12.3f} {rm:>14.2f} {fm:>14.2f} {rm / fm:>15.1f}")
    return lines


def main(argv=()) -> list[str]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small T, one round (smoke test)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-implicit", action="store_true", help="do not run benchmarks/hypergrad_implicit.py")
    args = ap.parse_args(list(argv))
    device = env.default_device()
    if device.type == "cpu":
        torch.set_num_threads(1)
    s, problem = setup(device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"digits logistic regression, GD lr={LR}, log_alpha=log(0.05), float64\n")
    Ts = (10, 30) if args.quick else (100, 1000)
    lines = ["Table 1: reverse-mode unrolled hypergradient, ours vs higher.innerloop_ctx (median of rounds)"]
    lines += table_higher(s, problem, device, Ts, 1 if args.quick else args.rounds)
    lines += ["", "Table 2: reverse vs forward mode as T grows (peak memory above start)"]
    lines += table_modes(problem, device, (10, 20) if args.quick else (25, 50, 100, 200, 400))
    print("\n".join(lines))
    if not args.no_implicit:
        path = Path(__file__).with_name("hypergrad_implicit.py")
        if path.exists():
            print(f"\n--- {path.name} ---")
            spec = importlib.util.spec_from_file_location("hypergrad_implicit", path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            mod.main()
    return lines


if __name__ == "__main__":
    main(sys.argv[1:])
