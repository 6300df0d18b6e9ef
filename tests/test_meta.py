"""Meta-optimisers for network hyperparameters over a task family (notebook 07, part 1)."""

import math

import numpy as np
import pytest
import torch

from metahpo_lib import hpo, meta

SMALL = dict(steps=20)


@pytest.fixture(scope="module")
def tasks():
    return meta.make_tasks(meta.sample_specs(meta.META_TRAIN_SOURCES, 3, seed=0))


@pytest.fixture(scope="module")
def held_out():
    return meta.make_task(meta.sample_specs(meta.META_TEST_SOURCES, 1, seed=1)[0])


def test_sources_and_split_are_disjoint():
    assert not set(meta.META_TRAIN_SOURCES) & set(meta.META_TEST_SOURCES)
    specs = meta.sample_specs(meta.META_TEST_SOURCES, 6, seed=3)
    assert {s.source for s in specs} == set(meta.META_TEST_SOURCES)
    assert specs == meta.sample_specs(meta.META_TEST_SOURCES, 6, seed=3)  # seeded
    assert all(3 <= s.scale <= 6 for s in meta.sample_specs(meta.META_TEST_SOURCES, 4, seed=0, ood=True))


@pytest.mark.parametrize("source", meta.SOURCES)
def test_every_source_makes_a_task(source, device):
    spec = meta.sample_specs([source], 1, seed=4)[0]
    t = meta.make_task(spec, device=device)
    assert t.X_train.shape == (spec.n_train, meta.WIDTH) and t.X_val.shape[0] == t.X_test.shape[0] >= 30
    assert t.X_train.device.type == device.type and t.features.shape == (len(meta.META_FEATURES),)
    assert int(t.y_train.max()) < spec.n_classes and t.source == source
    assert torch.equal(meta.make_task(spec, device=device).X_val, t.X_val)  # seeded


def test_vector_config_roundtrip_and_space():
    v = meta.to_vector(meta.DEFAULT)
    assert meta.to_config(v) == pytest.approx(meta.DEFAULT)
    assert list(meta.SPACE) == list(meta.KEYS) and len(meta.KEYS) == 25
    assert all(meta.SPACE[k].low <= meta.DEFAULT[k] <= meta.SPACE[k].high for k in meta.KEYS)


def test_evaluate_matches_hypergradient_and_finite_difference(held_out):
    """The vmapped trainings, the plain training and the hypergradient's value agree; the
    hypergradient matches a central difference along a direction (float64 task)."""
    task = meta.make_task(held_out.spec, dtype=torch.float64)
    v = meta.to_vector(meta.DEFAULT)
    vals, tests = meta.evaluate(task, torch.stack([v, v + 0.1]), 0, **SMALL)
    one, _ = meta.evaluate(task, v[None], 0, **SMALL)
    val, g, test = meta.hypergradient(task, v, 0, **SMALL)
    assert val == pytest.approx(float(vals[0]), rel=1e-6) == pytest.approx(float(one[0]), rel=1e-6)
    assert test == pytest.approx(float(tests[0]), rel=1e-6)
    d = torch.zeros(25, dtype=torch.float64)
    d[3], d[23] = 1.0, 1.0
    eps = 1e-4
    fd = (float(meta.val_loss(task, v + eps * d, 0, **SMALL)[0]) - float(meta.val_loss(task, v - eps * d, 0, **SMALL)[0])) / (2 * eps)
    assert float(g @ d) == pytest.approx(fd, rel=1e-4, abs=1e-7)


def test_diverged_training_is_capped(held_out):
    v = meta.to_vector(meta.DEFAULT)
    v[:meta.PHASES] = 1.0
    v[meta.PHASES + 3] = 4.0  # lr e, momentum 0.98
    big = meta.make_task(meta.TaskSpec(held_out.spec.source, held_out.spec.n_classes, held_out.spec.n_train, 0.0,
                                       "none", 50.0, 0.0, held_out.spec.seed))
    vals, tests = meta.evaluate(big, torch.stack([v, v]), 0, **SMALL)
    val, g, test = meta.hypergradient(big, v, 0, **SMALL)
    assert float(vals.max()) <= meta.CAP and float(tests.max()) <= meta.CAP and val <= meta.CAP and test <= meta.CAP
    assert val < meta.CAP or torch.equal(g, meta.DIVERGED)


def test_maml_meta_gradient_first_order_and_finite_difference(held_out):
    """Second order: the meta-gradient matches central differences in float64; first order
    differs from it only through the dropped second derivatives (same init gradient at k = 0)."""
    task = meta.make_task(held_out.spec, dtype=torch.float64)
    init, a = meta.to_vector(meta.DEFAULT), torch.full((25,), 1.0, dtype=torch.float64)
    loss, g = meta.maml_meta_gradient(task, init, a, k=1, seed=0, **SMALL)
    eps = 1e-6  # the meta-objective is rough on scales 1e-4..1e-2 (ReLU kinks after a large step)
    for key, i in (("init", 5), ("log_step", 19)):
        e = torch.zeros(25, dtype=torch.float64)
        e[i] = eps
        args = lambda s: (init + s * e, a) if key == "init" else (init, a + s * e)
        fd = (meta.maml_meta_gradient(task, *args(1), k=1, seed=0, **SMALL)[0]
              - meta.maml_meta_gradient(task, *args(-1), k=1, seed=0, **SMALL)[0]) / (2 * eps)
        assert float(g[key][i]) == pytest.approx(fd, rel=1e-3, abs=1e-7)
    l0, g0 = meta.maml_meta_gradient(task, init, a, k=0, seed=0, **SMALL)
    l0f, g0f = meta.maml_meta_gradient(task, init, a, k=0, seed=0, first_order=True, **SMALL)
    assert l0 == l0f and torch.equal(g0["init"], g0f["init"]) and float(g0["log_step"].abs().sum()) == 0.0
    _, gf = meta.maml_meta_gradient(task, init, a, k=1, seed=0, first_order=True, **SMALL)
    assert not torch.allclose(gf["init"], g["init"])


def test_meta_optimisers_train_and_test(tasks, held_out):
    shared = meta.SharedSetting(steps=20).meta_train(tasks, iterations=2, batch=2, monitor=tasks[:2], monitor_every=1)
    assert len(shared.curve) == 2 and [i for i, _ in shared.monitor] == [0, 1, 2]
    pred = meta.HyperPredictor(meta.to_config(shared.v), steps=20).meta_train(tasks, iterations=1, batch=2)
    cfg = pred.meta_test(held_out)
    assert set(cfg) == set(meta.KEYS) and all(meta.SPACE[k].low <= cfg[k] <= meta.SPACE[k].high for k in cfg)
    m = meta.MetaHGD(k=1, first_order=True, steps=20).meta_train(tasks, iterations=1, batch=2)
    path = m.adapt(held_out, seed=0, k=2)
    assert len(path) == 3 and not torch.equal(path[0], path[2])
    assert m.cheap_cost(0.4, k=2) == pytest.approx(1.8)


def test_run_search_and_incumbent_regret(held_out):
    r = meta.run_search("random", held_out, 0, 4, steps=20)
    assert len(r["vals"]) == 4 and r["configs"][0] == meta.to_config(meta.random_configs(4, seed=0)[0])
    t = meta.run_search("tpe", held_out, 0, 3, steps=20)
    assert len(t["tests"]) == 3 and t["costs"] == [1.0] * 3
    reg = meta.incumbent_regret(r["vals"], r["tests"], r["costs"], [1, 2, 4], min(r["tests"]))
    assert reg.shape == (3,) and (reg >= 0).all() and reg[-1] <= reg[0] or reg[-1] >= 0
    assert math.isnan(meta.incumbent_regret([1.0], [1.0], [2.0], [1], 0.0)[0])
    p = meta.TaskProblem(held_out, 0, gradient=True, steps=20)
    h = hpo.run_method("hgd", p, 2, seed=0)
    assert len(h) == 2 and p.kinds == ["hypergradient", "hypergradient"]


def test_incumbents_and_retrain(held_out):
    # the incumbent is the lowest validation loss among evaluations paid within the budget
    assert meta.incumbents([3.0, 1.0, 2.0, 0.5], [1.0, 1.0, 1.0, 1.5], [0.9, 1, 2, 3, 4.5]) == [None, 0, 1, 1, 3]
    C = meta.random_configs(3, seed=2)
    T = meta.retrain(held_out, C, [5, 6], steps=20)
    assert T.shape == (3, 2) and bool((T <= meta.CAP).all())
    # column r is a fresh training from run seed r: the same numbers as evaluating on that seed
    torch.testing.assert_close(T[:, 1], meta.evaluate(held_out, C, 6, steps=20)[1])
    assert not torch.equal(T[:, 0], T[:, 1])  # different seeds, different runs


def test_sample_specs_respects_the_half_of_a_source():
    # breast_cancer (569 rows, 2 classes) allows at most 284 training rows; 60 draws hit the cap
    specs = meta.sample_specs(["breast_cancer"], 60, seed=100)
    assert max(s.n_train for s in specs) <= 284


# ---- bad input: clear errors naming the argument ----

def test_empty_task_set_is_refused():
    with pytest.raises(ValueError, match="tasks is empty"):
        meta.SharedSetting().meta_train([], iterations=1)
    with pytest.raises(ValueError, match="tasks is empty"):
        meta.MetaHGD().meta_train([], iterations=1)


def test_single_meta_training_task_is_refused(tasks):
    with pytest.raises(ValueError, match="tasks holds a single task"):
        meta.HyperPredictor().meta_train(tasks[:1], iterations=1)
    with pytest.raises(ValueError, match="tasks holds a single task"):
        meta.SharedSetting().meta_train(tasks[0], iterations=1)


def test_overlapping_sources_are_refused(tasks, held_out):
    meta.check_split(tasks, [held_out])
    with pytest.raises(ValueError, match="task comes from a source that meta-training saw"):
        meta.check_split(tasks, [held_out, tasks[1]])


@pytest.mark.parametrize("budget", [0, 0.5, -3])
def test_budget_below_one_is_refused(held_out, budget):
    with pytest.raises(ValueError, match="budget must be >= 1"):
        meta.run_search("random", held_out, 0, budget)


def test_other_bad_inputs(tasks, held_out):
    with pytest.raises(ValueError, match="source must be one of"):
        meta.TaskSpec("mnist", 3, 80, 0.1, "none", 1.0, 0.0, 0)
    with pytest.raises(ValueError, match="n_classes must be"):
        meta.TaskSpec("wine", 4, 80, 0.1, "none", 1.0, 0.0, 0)
    with pytest.raises(ValueError, match="n_train must be <= 89"):
        meta.TaskSpec("wine", 3, 100, 0.1, "none", 1.0, 0.0, 0)
    with pytest.raises(ValueError, match="label_noise must be in"):
        meta.TaskSpec("wine", 3, 80, 1.0, "none", 1.0, 0.0, 0)
    with pytest.raises(ValueError, match="transform must be one of"):
        meta.TaskSpec("wine", 3, 80, 0.1, "rotate", 1.0, 0.0, 0)
    with pytest.raises(TypeError, match="spec must be a meta.TaskSpec"):
        meta.make_task("wine")
    with pytest.raises(ValueError, match="method must be one of"):
        meta.run_search("bohb", held_out, 0, 5)
    with pytest.raises(ValueError, match="iterations must be"):
        meta.SharedSetting().meta_train(tasks, iterations=0)
    with pytest.raises(TypeError, match=r"tasks\[1\] must be a meta.Task"):
        meta.SharedSetting().meta_train([tasks[0], "wine"], iterations=1)
    with pytest.raises(ValueError, match="config must be a dict with the 25 keys"):
        meta.to_vector({"log_lr": 0.1})
    with pytest.raises(ValueError, match="k must be"):
        meta.MetaHGD(k=-1)
    with pytest.raises(ValueError, match="vals, tests and costs must have the same length"):
        meta.incumbent_regret([1.0], [1.0, 2.0], [1.0], [1], 0.0)
    with pytest.raises(ValueError, match="vals and costs must have the same length"):
        meta.incumbents([1.0, 2.0], [1.0], [1])
    with pytest.raises(ValueError, match="seeds must name at least one run seed"):
        meta.retrain(held_out, meta.random_configs(1), [])
