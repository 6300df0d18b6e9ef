"""metahpo_lib.nets: float64 comparisons with independent references, and clear errors on bad input."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metahpo_lib import data, hypergrad, inner, nets


@pytest.fixture(scope="module")
def iris():
    return data.load("iris", dtype=torch.float64)


def mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def make(iris, **kw):
    opts = dict(steps=12, batch_size=16, lr=0.1)
    opts.update(kw)
    return nets.network(mlp(), iris.X_train, iris.y_train, iris.X_val, iris.y_val, **opts)


def reference_sgd(net, hparams, params, batches, momentum=None):
    """Plain-autograd minibatch SGD (independent of nets.run_steps and torch.func)."""
    W = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    vel = {k: torch.zeros_like(v) for k, v in W.items()}
    for t in range(net.steps):
        idx = batches.index[t]
        x, y = net.X_train[idx], net.y_train[idx]
        h = torch.tanh(x @ W["0.weight"].T + W["0.bias"])
        out = h @ W["2.weight"].T + W["2.bias"]
        wd = hparams["log_wd"].exp()
        loss = F.cross_entropy(out, y) + 0.5 * (wd[0] * W["0.weight"].pow(2).sum() + wd[1] * W["2.weight"].pow(2).sum())
        g = torch.autograd.grad(loss, list(W.values()), create_graph=True)
        lr = hparams["log_lr"].exp()
        if momentum is None:
            W = {k: w - lr * gi for (k, w), gi in zip(W.items(), g)}
        else:
            vel = {k: momentum * vel[k] + gi for k, gi in zip(W, g)}
            W = {k: w - lr * vel[k] for k, w in W.items()}
    return W


def test_train_matches_plain_autograd_and_hypergradient(iris):
    net = make(iris)
    h = net.init_hparams()
    p0, batches = net.init_params(3), net.draw(7)
    got = nets.run_all(net, p0, h, batches)[0]
    hp = {k: v.clone().requires_grad_(True) for k, v in h.items()}
    want = reference_sgd(net, hp, p0, batches)
    for k in got:
        torch.testing.assert_close(got[k], want[k].detach(), rtol=1e-10, atol=1e-12)
    ref = torch.autograd.grad(net.val_loss(want, hp), list(hp.values()))
    g = nets.unrolled(net, h, seed=7, params=p0)
    torch.testing.assert_close(g["log_lr"], ref[0], rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(g["log_wd"], ref[1], rtol=1e-8, atol=1e-12)


def test_unrolled_matches_central_differences(iris):
    net = make(iris, optimizer="momentum", momentum=0.9, schedule=3, label_smoothing=0.1)
    h = net.init_hparams()
    g = nets.unrolled(net, h, seed=1)

    def f(hh):
        return float(net.val_loss(nets.train(net, hh, seed=1), hh))
    for key in ("log_lr", "logit_momentum", "logit_smoothing"):
        e = torch.zeros_like(h[key]).flatten()
        e[0] = 1e-6
        e = e.view_as(h[key])
        fd = (f({**h, key: h[key] + e}) - f({**h, key: h[key] - e})) / 2e-6
        assert abs(float(g[key].flatten()[0]) - fd) < 1e-6 * max(1, abs(fd)), key


def test_train_many_equals_separate_trainings_float64(iris):
    net = make(iris, optimizer="adam", dropout=0.2, weight_decay=1e-3)
    K = 5
    H = nets.stack_configs([{**net.init_hparams(), "log_lr": torch.tensor(-4.0 + 0.5 * i, dtype=torch.float64),
                             "dropout": torch.tensor(0.1 * i, dtype=torch.float64)} for i in range(K)])
    P0 = nets.init_many(net, K, seed=2)
    P = nets.train_many(net, H, seed=11, inits=P0)
    for i in range(K):
        one = nets.train(net, {k: v[i] for k, v in H.items()}, seed=11, params={k: v[i] for k, v in P0.items()})
        for k in one:
            assert float((P[k][i] - one[k]).abs().max()) < 1e-6


def test_seed_hypergradients_equal_separate_unrolled(iris):
    net = make(iris)
    h = net.init_hparams()
    G = nets.seed_hypergradients(net, h, 3, seed=5, truncate=4)
    g = torch.Generator().manual_seed(5)
    for i in range(3):
        one = nets.unrolled(net, h, seed=g, truncate=4)
        torch.testing.assert_close(G["log_lr"][i], one["log_lr"], rtol=1e-9, atol=1e-12)


def test_full_batch_bilevel_works_with_hypergrad_methods(iris):
    net = make(iris, steps=10, batch_size=iris.X_train.shape[0])
    p = net.bilevel
    h = p.init_hparams()
    a = hypergrad.unrolled(p, h, inner.GD(lr="log_lr"), steps=10)
    b = nets.unrolled(net, h, seed=0, params=p.init_params())   # every batch is the whole set (a permutation)
    torch.testing.assert_close(a["log_wd"], b["log_wd"], rtol=1e-7, atol=1e-10)


def test_mixture_relaxation_and_discretize(iris):
    model = nn.Sequential(nn.Linear(4, 8), nets.Mixture([nn.ReLU(), nn.Tanh()]), nn.Linear(8, 3)).double()
    net = nets.network(model, iris.X_train, iris.y_train, iris.X_val, iris.y_val, steps=5, batch_size=16)
    assert "arch:1.logits" in net.init_hparams()
    g = nets.unrolled(net, net.init_hparams(), seed=0)
    assert float(g["arch:1.logits"].abs().sum()) > 0
    h = {**net.init_hparams(), "arch:1.logits": torch.tensor([0.0, 5.0], dtype=torch.float64)}
    d = nets.discretize(model, h)
    assert isinstance(d[1], nn.Tanh)
    x = torch.randn(3, 4, dtype=torch.float64)
    p = net.init_params(0)
    w = torch.softmax(h["arch:1.logits"], 0)
    z = x @ p["0.weight"].T + p["0.bias"]
    mixed = (w[0] * torch.relu(z) + w[1] * torch.tanh(z)) @ p["2.weight"].T + p["2.bias"]
    torch.testing.assert_close(net.forward(p, h, x), mixed)


def test_reinforce_gradient_is_unbiased():
    logits = {"a": torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)}
    R = torch.tensor([1.0, 3.0, 2.0], dtype=torch.float64)
    p = torch.softmax(logits["a"], 0)
    exact = p * (R - (p * R).sum())            # d/dalpha sum_c p_c R_c
    s = nets.sample_choices(logits, 200_000, seed=0)
    g = nets.reinforce_gradient(logits, s, R[s["a"]], baseline=2.0)
    torch.testing.assert_close(g["a"], exact, atol=0.01, rtol=0)


def test_kfold_partitions():
    folds = nets.kfold(23, 4, seed=1)
    vals = torch.cat([v for _, v in folds]).sort().values
    assert torch.equal(vals, torch.arange(23))
    for tr, va in folds:
        assert len(set(tr.tolist()) & set(va.tolist())) == 0 and len(tr) + len(va) == 23


def test_outer_descent_early_stopping():
    f = lambda h, k: hypergrad.HypergradResult({"a": torch.tensor(1.0)}, {"outer_loss": float(-h["a"])})
    monitor = lambda h: float((h["a"] + 0.5) ** 2)          # best near a = -0.5
    run = nets.outer_descent(f, {"a": torch.tensor(0.0)}, iterations=50, meta_lr=0.1, monitor=monitor, patience=3)
    assert run.stopped_at is not None and run.stopped_at < 50
    assert abs(float(run.best["a"]) + 0.5) <= 0.1


@pytest.mark.parametrize("bad, match", [
    (dict(model=nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))), "running statistics"),
    (dict(model=nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))), "dropout=rate"),
    (dict(dropout=1.0), "dropout must be in"),
    (dict(dropout=-0.1), "dropout must be"),
    (dict(y_train_cut=True), "X_train and y_train must have the same number of rows"),
    (dict(batch_size=10_000), "batch_size must be <="),
    (dict(optimizer="momentum"), "momentum is a hyperparameter"),
    (dict(schedule=5, steps=12), "divisible"),
])
def test_network_bad_inputs(iris, bad, match):
    model = bad.pop("model", mlp())
    y = iris.y_train[:-1] if bad.pop("y_train_cut", False) else iris.y_train
    with pytest.raises((ValueError, TypeError), match=match):
        nets.network(model, iris.X_train, y, iris.X_val, iris.y_val, **{"steps": 12, **bad})


def test_many_and_categorical_bad_inputs(iris):
    net = make(iris, dropout=0.1)
    with pytest.raises(ValueError, match="K = 0"):
        nets.init_many(net, 0)
    with pytest.raises(ValueError, match="K = 0"):
        nets.stack_configs([])
    with pytest.raises(ValueError, match="K = 0"):
        nets.train_many(net, {k: v.expand(0, *v.shape) for k, v in net.init_hparams().items()})
    with pytest.raises(ValueError, match=r"hparams\['dropout'\]"):
        nets.train(net, {**net.init_hparams(), "dropout": torch.tensor(1.0, dtype=torch.float64)})
    with pytest.raises(ValueError, match="at least one choice"):
        nets.reinforce_search(lambda c: 0.0, {"width": []}, 8)
    with pytest.raises(ValueError, match="at least one choice"):
        nets.sample_choices({"a": torch.zeros(0)}, 3)
    with pytest.raises(ValueError, match="at least one choice"):
        nets.Mixture([])
    with pytest.raises(TypeError, match="NetProblem"):
        nets.train("net", {})
    with pytest.raises(ValueError, match="truncate"):
        nets.unrolled(net, net.init_hparams(), truncate=100)


def test_divergence_is_reported(iris):
    net = make(iris, lr=10.0, weight_decay=10.0, steps=30)   # W <- (1 - 100) W each step
    with pytest.raises(inner.DivergenceError):
        nets.train(net, net.init_hparams(), seed=0)
