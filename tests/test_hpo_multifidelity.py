"""Successive halving and Hyperband (notebook 01): rung sizes and budgets as in the papers, survivors,
costs, seeding and bad input."""

import math

import pytest

from metahpo_lib import hpo
from metahpo_lib.hpo import multifidelity as mf

SPACE = {"x": hpo.Float(0.0, 1.0), "y": hpo.Float(-1.0, 1.0)}


def noisy_quadratic(config, budget):
    # the low-fidelity score is the full one plus a bias that shrinks with the budget
    return (config["x"] - 0.3) ** 2 + config["y"] ** 2 + math.sin(17 * config["x"]) / budget


def test_rung_budgets():
    assert mf.rung_budgets(1, 81) == [1, 3, 9, 27, 81]
    assert mf.rung_budgets(5, 5) == [5]
    assert mf.rung_budgets(1, 16, eta=2) == [1, 2, 4, 8, 16]
    with pytest.raises(ValueError, match="min_budget must be <= max_budget"):
        mf.rung_budgets(10, 1)
    with pytest.raises(ValueError, match="eta"):
        mf.rung_budgets(1, 9, eta=1)
    with pytest.raises(ValueError, match="min_budget"):
        mf.rung_budgets(0, 9)


def test_successive_halving_keeps_the_best_third_of_each_rung():
    res = mf.successive_halving(noisy_quadratic, SPACE, 27, 1, 27, eta=3, seed=0)
    rungs = res.brackets[0]
    assert [r.budget for r in rungs] == [1, 3, 9, 27] and [len(r.configs) for r in rungs] == [27, 9, 3, 1]
    for lower, upper in zip(rungs, rungs[1:]):
        best = sorted(range(len(lower.values)), key=lower.values.__getitem__)[:len(upper.configs)]
        assert [lower.configs[i] for i in best] == upper.configs
        for c, v in zip(upper.configs, upper.values):
            assert v == pytest.approx(noisy_quadratic(c, upper.budget))
    assert res.cost == 27 * 1 + 9 * 3 + 3 * 9 + 1 * 27 and len(res.history) == 40
    assert res.best_config == rungs[-1].configs[0] and res.best_value == rungs[-1].values[0]
    assert all(c["budget"] in (1, 3, 9, 27) for c in res.history.configs)


def test_successive_halving_with_exact_low_fidelity_finds_the_best_configuration():
    exact = lambda c, b: noisy_quadratic(c, math.inf)  # noqa: E731
    res = mf.successive_halving(exact, SPACE, 30, 1, 9, seed=3)
    first = res.brackets[0][0]
    assert res.best_value == pytest.approx(min(first.values))


def test_hyperband_brackets_follow_li_et_al_table_1():
    res = mf.hyperband(noisy_quadratic, SPACE, 1, 81, eta=3, seed=0)
    sizes = [[len(r.configs) for r in b] for b in res.brackets]
    assert sizes == [[81, 27, 9, 3, 1], [34, 11, 3, 1], [15, 5, 1], [8, 2], [5]]
    assert [[r.budget for r in b] for b in res.brackets][1] == [3, 9, 27, 81]
    top = [v for b in res.brackets for v in b[-1].values]
    assert res.best_value == min(top)
    assert mf.hyperband(noisy_quadratic, SPACE, 1, 81, seed=0).history.configs == res.history.configs


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="n_configs"):
        mf.successive_halving(noisy_quadratic, SPACE, 0, 1, 9)
    with pytest.raises(TypeError, match="objective"):
        mf.hyperband(None, SPACE, 1, 9)
    with pytest.raises(ValueError, match="'budget'"):
        mf.hyperband(noisy_quadratic, {"budget": hpo.Float(0.0, 1.0)}, 1, 9)
    with pytest.raises(ValueError, match="space"):
        mf.successive_halving(noisy_quadratic, {}, 9, 1, 9)
