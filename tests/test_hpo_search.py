import math

import pytest

from metahpo_lib import hpo
from metahpo_lib.hpo.search import grid_configs


def test_grid_fits_budget_and_covers_range():
    space = {"a": hpo.Float(1e-3, 1e3, log=True), "b": hpo.Float(0, 1)}
    configs = grid_configs(space, 30)
    assert len(configs) == 25
    assert min(c["a"] for c in configs) == pytest.approx(1e-3) and max(c["a"] for c in configs) == pytest.approx(1e3)
    assert sorted({round(c["b"], 12) for c in configs}) == [0, 0.25, 0.5, 0.75, 1]
    assert len(grid_configs({"c": hpo.Categorical("xyz"), "n": hpo.Int(1, 3)}, 100)) == 9


def test_random_search_is_seeded_in_range_and_log_uniform():
    space = {"a": hpo.Float(1e-4, 1e4, log=True), "n": hpo.Int(2, 5), "c": hpo.Categorical(["x", "y"])}
    h1 = hpo.random_search(lambda c: math.log(c["a"]) ** 2, space, 400, seed=5)
    h2 = hpo.random_search(lambda c: math.log(c["a"]) ** 2, space, 400, seed=5)
    assert h1.configs == h2.configs and len(h1) == 400
    a = [c["a"] for c in h1.configs]
    assert all(1e-4 <= x <= 1e4 for x in a)
    below_one = sum(x < 1 for x in a) / len(a)
    assert 0.4 < below_one < 0.6  # log-uniform: half the mass below the geometric midpoint
    assert {c["n"] for c in h1.configs} == {2, 3, 4, 5} and {c["c"] for c in h1.configs} == {"x", "y"}


def test_history_best_so_far():
    h = hpo.History()
    for v in [3.0, float("nan"), 1.0, 2.0, 0.5]:
        h.add({"v": v}, v)
    assert h.best_so_far == [3.0, 3.0, 1.0, 1.0, 0.5]
    assert h.best_value == 0.5 and h.best_config == {"v": 0.5} and h.best_index == 4


def test_grid_search_evaluates_every_point():
    calls = []
    h = hpo.grid_search(lambda c: calls.append(c) or (c["x"] - 0.3) ** 2, {"x": hpo.Float(0, 1)}, 11)
    assert len(calls) == 11 and h.best_config["x"] == pytest.approx(0.3)


def test_bad_input():
    with pytest.raises(ValueError, match="space must be a non-empty dict"):
        hpo.random_search(lambda c: 0.0, {}, 5)
    with pytest.raises(ValueError, match="need finite low < high"):
        hpo.random_search(lambda c: 0.0, {"a": hpo.Float(1, 1)}, 5)
    with pytest.raises(ValueError, match="log scale needs low > 0"):
        hpo.grid_search(lambda c: 0.0, {"a": hpo.Float(0, 1, log=True)}, 5)
    with pytest.raises(ValueError, match="at least one choice"):
        hpo.grid_search(lambda c: 0.0, {"a": hpo.Categorical([])}, 5)
    with pytest.raises(ValueError, match="budget must be an integer >= 1"):
        hpo.random_search(lambda c: 0.0, {"a": hpo.Float(0, 1)}, 0)
    with pytest.raises(TypeError, match=r"space\['a'\] must be Float"):
        hpo.random_search(lambda c: 0.0, {"a": (0, 1)}, 3)
    with pytest.raises(TypeError, match="objective must be callable"):
        hpo.random_search(None, {"a": hpo.Float(0, 1)}, 3)
