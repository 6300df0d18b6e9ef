"""Meta-learned hyperparameters over a ridge task family (notebook 07, part 1)."""

import math

import numpy as np
import pytest
import torch

from metahpo_lib import hpo, meta


@pytest.fixture(scope="module")
def train_tasks():
    return meta.make_tasks(meta.sample_specs(meta.META_TRAIN_SOURCES, 18, seed=0, n_range=(60, 200), d_max=12))


def _h(a, b, device=None):
    return {"log_alpha": torch.tensor(a, dtype=torch.float64, device=device),
            "scale_power": torch.tensor(b, dtype=torch.float64, device=device)}


def test_sources_are_split():
    assert not set(meta.META_TRAIN_SOURCES) & set(meta.META_TEST_SOURCES)
    assert not set(meta.OUT_OF_DISTRIBUTION_SOURCES) & (set(meta.META_TRAIN_SOURCES) | set(meta.META_TEST_SOURCES))
    specs = meta.sample_specs(meta.META_TEST_SOURCES, 6, seed=3)
    assert {s.source for s in specs} == set(meta.META_TEST_SOURCES)
    assert specs == meta.sample_specs(meta.META_TEST_SOURCES, 6, seed=3)  # seeded


@pytest.mark.parametrize("source", meta.SOURCES)
def test_make_task(source, device):
    spec = meta.TaskSpec(source, 120, 5, 0.3, 1.0, seed=4)
    t = meta.make_task(spec, device=device)
    s = t.split
    assert s.X_train.shape == (60, 5) and s.X_val.shape[0] == 30 and s.X_test.shape[0] == 30
    assert s.X_train.device.type == device.type and t.features.shape == (len(meta.META_FEATURES),)
    assert torch.isfinite(t.features).all()
    assert abs(float(t.log_scales.mean())) < 1e-12
    assert float(s.X_train.std(0).min()) > 1e-3  # no (nearly) constant feature column (digits pixels)
    assert torch.allclose(t.log_scales, s.X_train.std(0).log() - s.X_train.std(0).log().mean())
    t2 = meta.make_task(spec, device=device)
    assert torch.equal(t2.split.X_train, s.X_train) and torch.equal(t2.split.y_val, s.y_val)


def _reference_val_loss(task, a, b):
    """Independent closed form: ridge with per-feature penalties exp(a + b * log s_j)."""
    s = task.split
    n = s.X_train.shape[0]
    alpha = torch.exp(a + b * task.log_scales)
    w = torch.linalg.solve(s.X_train.T @ s.X_train / n + torch.diag(alpha), s.X_train.T @ s.y_train / n)
    return ((s.X_val @ w - s.y_val) ** 2).mean() / 2


def test_hypergrad_matches_autograd_and_finite_differences(train_tasks, device):
    task = meta.make_task(train_tasks[1].spec, device=device)
    a = torch.tensor(-2.5, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.tensor(1.3, dtype=torch.float64, device=device, requires_grad=True)
    ref = _reference_val_loss(task, a, b)
    ga, gb = torch.autograd.grad(ref, [a, b])
    g = task.hypergrad(_h(-2.5, 1.3, device))
    assert math.isclose(task.val_loss(_h(-2.5, 1.3, device)), float(ref.detach()), rel_tol=1e-10)
    assert math.isclose(float(g["log_alpha"]), float(ga), rel_tol=1e-8)
    assert math.isclose(float(g["scale_power"]), float(gb), rel_tol=1e-8, abs_tol=1e-12)
    eps = 1e-5
    fd = (task.val_loss(_h(-2.5 + eps, 1.3, device)) - task.val_loss(_h(-2.5 - eps, 1.3, device))) / (2 * eps)
    assert math.isclose(float(g["log_alpha"]), fd, rel_tol=1e-5, abs_tol=1e-10)


def test_loss_grid_and_dense_best(train_tasks):
    task = train_tasks[0]
    a, b = torch.tensor([-4.0, -1.0, 2.0], dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64)
    L = task.loss_grid(a, b)
    T = task.loss_grid(a, b, "test")
    for i in range(3):
        for j in range(2):
            h = _h(float(a[i]), float(b[j]))
            assert math.isclose(float(L[i, j]), task.val_loss(h), rel_tol=1e-9)
            assert math.isclose(float(T[i, j]), task.test_loss(h), rel_tol=1e-9)
    best, cfg = meta.dense_best(task, num=(21, 11))
    assert best <= float(L.min()) + 1e-12 and math.isclose(best, task.objective(cfg), rel_tol=1e-12)


def test_meta_gradient_is_the_batch_mean(train_tasks):
    h = _h(-3.0, 1.5)
    g = meta.meta_gradient(train_tasks[:4], h)
    for k in meta.HPARAM_KEYS:
        assert math.isclose(float(g[k]), float(np.mean([float(t.hypergrad(h)[k]) for t in train_tasks[:4]])),
                            rel_tol=1e-12)


def test_meta_train_lowers_the_meta_loss(train_tasks):
    shared = meta.meta_train(train_tasks, kind="shared", iterations=60, seed=0, meta_lr=0.1)
    pred = meta.meta_train(train_tasks, kind="predictor", iterations=60, seed=0, meta_lr=0.1)
    assert torch.count_nonzero(shared.weights["W"]) == 0 and torch.count_nonzero(pred.weights["W"]) > 0

    def mean_loss(p):
        return np.mean([t.val_loss(p(t)) for t in train_tasks])

    start = np.mean([t.val_loss(_h(-2.0, 1.0)) for t in train_tasks])  # the initial setting
    assert mean_loss(shared) < start and mean_loss(pred) < start
    cfg = pred.config(train_tasks[0])
    assert all(meta.SPACE[k].low <= cfg[k] <= meta.SPACE[k].high for k in meta.HPARAM_KEYS)
    assert len(pred.losses) == 60
    again = meta.meta_train(train_tasks, kind="predictor", iterations=60, seed=torch.Generator().manual_seed(0),
                            meta_lr=0.1)
    assert torch.equal(again.weights["W"], pred.weights["W"])  # an int seed and its generator agree


def test_meta_train_is_descend_with_torch_adam(train_tasks):
    """An independent reference: the outer loop written out with torch.optim.Adam."""
    pred = meta.meta_train(train_tasks, kind="predictor", iterations=15, batch_size=4, seed=1, meta_lr=0.1)
    F = torch.stack([t.features for t in train_tasks])
    mu, sd = F.mean(0), F.std(0).clamp_min(1e-6)
    W = torch.zeros(F.shape[1], 2, dtype=torch.float64, requires_grad=True)
    b = torch.tensor([-2.0, 1.0], dtype=torch.float64, requires_grad=True)
    opt, gen = torch.optim.Adam([b, W], lr=0.1), torch.Generator().manual_seed(1)
    for _ in range(15):
        idx = torch.randperm(len(train_tasks), generator=gen)[:4].tolist()
        opt.zero_grad()
        loss = sum(_reference_val_loss(train_tasks[i], *meta.predict({"W": W, "b": b}, train_tasks[i].features,
                                                                      mu, sd).values()) for i in idx) / 4
        (loss + 0.5 * 1e-2 * W.pow(2).sum()).backward()
        opt.step()
        with torch.no_grad():
            b[0].clamp_(-12.0, 4.0)
            b[1].clamp_(-1.0, 3.0)
    torch.testing.assert_close(pred.weights["W"], W.detach(), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(pred.weights["b"], b.detach(), rtol=1e-7, atol=1e-9)


def test_run_methods_curves(train_tasks):
    task = train_tasks[2]
    pred = meta.meta_train(train_tasks, kind="predictor", iterations=10, seed=0)
    res = meta.run_methods(task, predictor=pred, shared=pred, budget=12, grid_budgets=(1, 5, 10), seed=0)
    assert set(res) == {"grid", "random", "tpe", "shared", "predictor", "predictor+hgd", "predictor+tpe"}
    for m, (v, t) in res.items():
        assert v.shape == t.shape == (12,)
        if m != "grid":
            assert (np.diff(v) <= 1e-15).all()  # best so far
    assert np.isnan(res["grid"][0][1]) and np.isfinite(res["grid"][0][[0, 4, 9]]).all()
    p0 = res["predictor"][0][0]
    assert np.allclose(res["predictor"][0], p0)
    assert res["predictor+tpe"][0][0] == pytest.approx(p0) and res["predictor+hgd"][0][0] == pytest.approx(p0)
    ref, _ = meta.dense_best(task)
    assert all(np.nanmin(v) >= ref - 1e-6 for v, _ in res.values())  # the dense reference is (nearly) the best


def test_run_methods_through_the_registry(train_tasks):
    """Every method of the comparison is a registry name; a newly registered baseline and any
    'start+method' combination work without touching meta."""
    task = train_tasks[2]
    pred = meta.meta_train(train_tasks, kind="predictor", iterations=5, seed=0)

    @hpo.register("lower_corner")
    def lower_corner(problem, budget, *, seed, warm_start):
        cfg = {k: d.low for k, d in problem.space.items()}
        h = hpo.History()
        h.add(cfg, problem.objective(cfg))
        return h

    try:
        res = meta.run_methods(task, predictor=pred, budget=8, methods=["lower_corner", "predictor+random", "hgd"])
    finally:
        del hpo.METHODS["lower_corner"]
    assert np.allclose(res["lower_corner"][0], task.objective({"log_alpha": -12.0, "scale_power": -1.0}))
    assert res["predictor+random"][0][0] == pytest.approx(task.objective(pred.config(task)))
    h = hpo.random_search(task.objective, meta.SPACE, 7, seed=0)  # after the one warm-start evaluation
    assert res["predictor+random"][0][-1] == pytest.approx(min([res["predictor+random"][0][0]] + h.values))
    hgd = hpo.hypergradient_descent(task.objective, meta.SPACE, 8, gradient=task.gradient)
    np.testing.assert_allclose(res["hgd"][0], np.minimum.accumulate(hgd.values))
    assert task.space is meta.SPACE and set(task.gradient({"log_alpha": -2.0, "scale_power": 1.0})) == set(meta.SPACE)


def test_bad_input(train_tasks):
    with pytest.raises(ValueError, match="source"):
        meta.TaskSpec("mnist", 100, 5, 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="sources"):
        meta.sample_specs(["iris"], 3)
    with pytest.raises(ValueError, match="n_tasks"):
        meta.sample_specs(["synthetic"], 0)
    with pytest.raises(ValueError, match="n"):
        meta.TaskSpec("synthetic", 10, 5, 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="d must be"):
        meta.make_task(meta.TaskSpec("wine", 100, 40, 0.1, 0.1, 0))
    with pytest.raises(ValueError, match="n must be"):
        meta.make_task(meta.TaskSpec("wine", 1000, 4, 0.1, 0.1, 0))
    with pytest.raises(TypeError, match="spec"):
        meta.make_task("wine")
    with pytest.raises(ValueError, match="hparams"):
        train_tasks[0].val_loss({"log_alpha": torch.tensor(0.0, dtype=torch.float64)})
    with pytest.raises(ValueError, match="kind"):
        meta.meta_train(train_tasks, kind="maml")
    with pytest.raises(ValueError, match="iterations"):
        meta.meta_train(train_tasks, iterations=0)
    with pytest.raises(ValueError, match="meta_lr"):
        meta.meta_train(train_tasks, meta_lr=0.0)
    with pytest.raises(TypeError, match="seed"):
        meta.meta_train(train_tasks, seed=0.5)
    with pytest.raises(TypeError, match="seed"):
        meta.TaskSpec("synthetic", 100, 5, 0.1, 0.1, seed=1.0)
    with pytest.raises(ValueError, match="tasks"):
        meta.meta_train([])
    with pytest.raises(ValueError, match="at least 2 Task"):
        meta.meta_train(train_tasks[:1])  # one task: its meta-features have no spread
    with pytest.raises(ValueError, match="budget"):
        meta.run_methods(train_tasks[0], budget=0)
    with pytest.raises(ValueError, match="budget"):
        hpo.hypergradient_descent(train_tasks[0].objective, meta.SPACE, 0, gradient=train_tasks[0].gradient)
    with pytest.raises(ValueError, match="refine_iterations"):
        meta.dense_best(train_tasks[0], refine_iterations=-1)
    with pytest.raises(ValueError, match="num"):
        meta.dense_best(train_tasks[0], num=(1, 5))
    with pytest.raises(ValueError, match="tasks"):
        meta.meta_gradient([], _h(0.0, 1.0))
    with pytest.raises(ValueError, match="methods"):
        meta.run_methods(train_tasks[0], methods=["predictor"])  # no predictor given
    with pytest.raises(ValueError, match="which"):
        train_tasks[0].loss_grid([0.0], [0.0], "train")
