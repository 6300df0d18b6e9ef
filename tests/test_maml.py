"""MAML family (notebook 06): every meta-gradient against an independent per-task reference
written with plain autograd loops (float64), the outer loop and evaluation, and every bad input."""

import functools
import math
import warnings

import pytest
import scipy.stats
import torch
from torch import nn
from torch.func import functional_call

from metahpo_lib import env, inner, linalg, maml, stats
from metahpo_lib.tasks import DigitsEpisodes, Sinusoid, TaskBatch


def mlp(act=nn.Tanh, width=16, seed=0, inp=1, out=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(inp, width), act(), nn.Linear(width, width), act(), nn.Linear(width, out)).double()


def batch(device, tasks=5, shots=6, query=7, seed=0):
    return Sinusoid(device=device, dtype=torch.float64).sample(tasks, shots, query, seed=seed)


def mse(pred, y):
    return ((pred - y) ** 2).mean()


def rel_err(got: dict, want: dict) -> float:
    num = sum(float(((got[k] - want[k]).detach() ** 2).sum()) for k in want)
    den = sum(float((want[k].detach() ** 2).sum()) for k in want)
    return math.sqrt(num / den)


def reference_maml(net, params, b, lr, steps, *, first_order=False, head=None):
    """Per-task loop: adapt with autograd (create_graph for second order), average the query gradients."""
    names = list(params)
    total = {k: torch.zeros_like(v) for k, v in params.items()}
    T = b.x_support.shape[0]
    for i in range(T):
        fast = dict(params)
        for _ in range(steps):
            loss = mse(functional_call(net, fast, (b.x_support[i],)), b.y_support[i])
            keys = names if head is None else head
            gs = torch.autograd.grad(loss, [fast[k] for k in keys], create_graph=not first_order)
            lr_of = (lambda k: lr[k]) if isinstance(lr, dict) else (lambda k: lr)
            fast = {**fast, **{k: fast[k] - lr_of(k) * g for k, g in zip(keys, gs)}}
        if first_order:   # gradient of the query loss at the adapted weights
            fast = {k: v.detach().requires_grad_(True) for k, v in fast.items()}
            lq = mse(functional_call(net, fast, (b.x_query[i],)), b.y_query[i]) / T
            for k, g in zip(names, torch.autograd.grad(lq, [fast[k] for k in names])):
                total[k] += g
        else:
            lq = mse(functional_call(net, fast, (b.x_query[i],)), b.y_query[i]) / T
            wrt = list(params.values()) + ([lr[k] for k in names] if isinstance(lr, dict) else [])
            gs = torch.autograd.grad(lq, wrt)
            for k, g in zip(names, gs):
                total[k] += g
            if isinstance(lr, dict):
                for k, g in zip(names, gs[len(names):]):
                    total["lr." + k] = total.get("lr." + k, 0) + g
    return total


def leaves(net, device):
    return {k: v.detach().clone().to(device).requires_grad_(True) for k, v in net.named_parameters()}


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU])
def test_maml_second_order_matches_per_task_loop(device, steps, act):
    net = mlp(act).to(device)
    b = batch(device)
    learner = maml.MAML(net, lr=0.05, steps=steps)
    got, loss = learner.meta_grad(b)
    want = reference_maml(net, leaves(net, device), b, 0.05, steps)
    assert rel_err(got, want) <= 1e-6
    # meta_loss is differentiable: its backward gives the same meta-gradient
    meta = learner.meta_parameters()
    gl = torch.autograd.grad(learner.meta_loss(b), list(meta.values()))
    assert rel_err(dict(zip(meta, gl)), want) <= 1e-6
    assert float(loss) == pytest.approx(float(learner.meta_loss(b).detach()), rel=1e-12)


def test_first_order_matches_its_definition_and_differs_from_second_order(device):
    net = mlp().to(device)
    b = batch(device)
    fo = maml.MAML(net, lr=0.1, steps=2, first_order=True).meta_grad(b)[0]
    want = reference_maml(net, leaves(net, device), b, 0.1, 2, first_order=True)
    assert rel_err(fo, want) <= 1e-10
    so = maml.MAML(net, lr=0.1, steps=2).meta_grad(b)[0]
    assert rel_err(fo, so) > 1e-3  # the Hessian term matters here


# the first edition's FOMAML(mlp(), inner_lr=0.1, steps=2).meta_grad(batch("cpu")): (sum, norm) per tensor, and the loss
OLD_FOMAML = {"0.weight": (-0.43315683474487854, 0.5392676288648294), "0.bias": (0.08178111383325898, 0.7252115111267166),
              "2.weight": (-1.4674465594981156, 2.29953975237668), "2.bias": (-0.8626951792816939, 1.172284225491278),
              "4.weight": (0.5804044927922128, 3.2317811368347633), "4.bias": (0.8178985657364128, 0.8178985657364128)}


def test_first_order_flag_reproduces_the_old_fomaml_numbers(device):
    learner = maml.MAML(mlp().to(device), lr=0.1, steps=2, first_order=True)
    assert learner.name == "FOMAML" and "first_order=True" in repr(learner)
    got, loss = learner.meta_grad(batch(device))
    assert float(loss) == pytest.approx(10.38668533016844, rel=1e-12)
    for k, (total, norm) in OLD_FOMAML.items():
        assert float(got[k].sum()) == pytest.approx(total, rel=1e-10, abs=1e-13)
        assert float(got[k].norm()) == pytest.approx(norm, rel=1e-10)


def test_meta_sgd_matches_per_task_loop_for_params_and_learning_rates(device):
    net = mlp().to(device)
    b = batch(device)
    learner = maml.MetaSGD(net, lr=0.05, steps=2)
    torch.manual_seed(1)
    with torch.no_grad():   # distinct learning rates per entry
        for v in learner.lrs.values():
            v.uniform_(0.01, 0.1)
    got, _ = learner.meta_grad(b)
    assert set(got) == set(learner.params) | {"lr." + k for k in learner.params}
    lrs = {k: v.detach().clone().requires_grad_(True) for k, v in learner.lrs.items()}
    want = reference_maml(net, leaves(net, device), b, lrs, 2)
    assert rel_err(got, want) <= 1e-6
    assert rel_err({k: got[k] for k in got if k.startswith("lr.")}, {k: want[k] for k in want if k.startswith("lr.")}) <= 1e-6


def test_anil_adapts_only_the_head(device):
    net = mlp().to(device)
    b = batch(device)
    learner = maml.ANIL(net, lr=0.1, steps=2)
    assert learner.adapted_keys == ["4.weight", "4.bias"]
    got, _ = learner.meta_grad(b)
    want = reference_maml(net, leaves(net, device), b, 0.1, 2, head=["4.weight", "4.bias"])
    assert rel_err(got, want) <= 1e-6
    adapted = learner.adapt(None, b, steps=3)
    for k in ["0.weight", "0.bias", "2.weight"]:
        assert torch.equal(adapted[k], learner.params[k].detach().expand_as(adapted[k]))
    assert not torch.allclose(adapted["4.weight"][0], learner.params["4.weight"])
    with pytest.raises(ValueError, match="head"):
        maml.ANIL(net, head="nope")


def test_reptile_direction_matches_loop(device):
    net = mlp().to(device)
    b = batch(device)
    learner = maml.Reptile(net, lr=0.05, steps=4)
    got, _ = learner.meta_grad(b)
    P = leaves(net, device)
    want = {k: torch.zeros_like(v) for k, v in P.items()}
    for i in range(b.tasks):
        fast = {k: v.detach().clone().requires_grad_(True) for k, v in P.items()}
        for _ in range(4):
            gs = torch.autograd.grad(mse(functional_call(net, fast, (b.x_support[i],)), b.y_support[i]), list(fast.values()))
            fast = {k: (fast[k] - 0.05 * g).detach().requires_grad_(True) for k, g in zip(fast, gs)}
        for k in P:
            want[k] += (P[k].detach() - fast[k].detach()) / b.tasks
    assert rel_err(got, want) <= 1e-10


def test_adapt_matches_loop_and_steps_zero_is_identity(device):
    net = mlp().to(device)
    b = batch(device)
    learner = maml.MAML(net, lr=0.05)
    a0 = learner.adapt(None, (b.x_support, b.y_support), steps=0)
    for k, v in learner.params.items():
        assert a0[k].shape == (b.tasks, *v.shape) and torch.equal(a0[k], v.detach().expand_as(a0[k]))
    a2 = learner.adapt(None, b, steps=2)
    i = 3
    fast = leaves(net, device)
    for _ in range(2):
        gs = torch.autograd.grad(mse(functional_call(net, fast, (b.x_support[i],)), b.y_support[i]), list(fast.values()))
        fast = {k: fast[k] - 0.05 * g for k, g in zip(fast, gs)}
    assert rel_err({k: v[i] for k, v in a2.items()}, fast) <= 1e-12
    pred = learner.predict(a2, b.x_query)
    assert pred.shape == b.y_query.shape
    torch.testing.assert_close(pred[i], functional_call(net, fast, (b.x_query[i],)))


def test_imaml_matches_explicit_hessian_solve(device):
    net = mlp(width=8).to(device)
    b = batch(device, tasks=3)
    lam, lr, steps = 4.0, 0.05, 20
    solve = functools.partial(linalg.cg, iters=500, tol=1e-13, on_failure="raise")
    learner = maml.IMAML(net, lr=lr, steps=steps, lam=lam, solve=solve)
    got, _ = learner.meta_grad(b)
    assert learner.last_solve.converged
    P = {k: v.detach() for k, v in leaves(net, device).items()}
    names, shapes = list(P), [v.shape for v in P.values()]
    sizes = [v.numel() for v in P.values()]

    def unflat(vec):
        return {k: t.view(s) for k, t, s in zip(names, vec.split(sizes), shapes)}

    theta = torch.cat([v.flatten() for v in P.values()])
    want = torch.zeros_like(theta)
    for i in range(b.tasks):
        def ls(vec):
            return mse(functional_call(net, unflat(vec), (b.x_support[i],)), b.y_support[i])

        phi = theta.clone()
        for _ in range(steps):   # gradient descent on the proximal objective
            phi = phi - lr * (torch.func.grad(ls)(phi) + lam * (phi - theta))
        H = torch.autograd.functional.hessian(ls, phi)
        gq = torch.func.grad(lambda v: mse(functional_call(net, unflat(v), (b.x_query[i],)), b.y_query[i]))(phi)
        want += torch.linalg.solve(torch.eye(len(theta), dtype=theta.dtype, device=theta.device) + H / lam, gq) / b.tasks
    assert rel_err(got, unflat(want)) <= 1e-6


def test_imaml_equals_true_gradient_of_the_proximal_solution_for_a_linear_model(device):
    """Linear model, MSE: the proximal inner problem has a closed form, phi*(theta) = (H + lam I)^-1 (lam theta + 2/n X^T y);
    differentiate the query loss through it with autograd and compare with iMAML run to convergence."""
    torch.manual_seed(0)
    net = nn.Linear(3, 1).double().to(device)
    g = torch.Generator().manual_seed(0)
    xs, xq = torch.randn(4, 6, 3, generator=g, dtype=torch.float64), torch.randn(4, 5, 3, generator=g, dtype=torch.float64)
    ys, yq = torch.randn(4, 6, 1, generator=g, dtype=torch.float64), torch.randn(4, 5, 1, generator=g, dtype=torch.float64)
    b = TaskBatch(xs, ys, xq, yq).to(device)
    lam = 0.7
    learner = maml.IMAML(net, lr=0.1, steps=800, lam=lam,
                         solve=functools.partial(linalg.cg, iters=100, tol=1e-14, on_failure="raise"))
    got, _ = learner.meta_grad(b)
    w = net.weight.detach().clone().requires_grad_(True)
    c = net.bias.detach().clone().requires_grad_(True)
    theta = torch.cat([w.flatten(), c])
    total = 0
    for i in range(4):
        X = torch.cat([b.x_support[i], torch.ones(6, 1, dtype=torch.float64, device=device)], 1)
        Hs = 2 / 6 * X.T @ X
        phi = torch.linalg.solve(Hs + lam * torch.eye(4, dtype=torch.float64, device=device),
                                 lam * theta + 2 / 6 * X.T @ b.y_support[i].flatten())
        Xq = torch.cat([b.x_query[i], torch.ones(5, 1, dtype=torch.float64, device=device)], 1)
        total = total + ((Xq @ phi - b.y_query[i].flatten()) ** 2).mean() / 4
    gw, gc = torch.autograd.grad(total, [w, c])
    assert rel_err(got, {"weight": gw, "bias": gc}) <= 1e-6


def test_imaml_memory_flat_in_steps_unlike_maml():
    net = mlp(nn.ReLU, width=64).float()
    b = Sinusoid().sample(25, 10, seed=0)
    mem = {}
    for cls in (maml.MAML, maml.IMAML):
        for steps in (1, 8):
            kw = {"solve": functools.partial(linalg.cg, iters=3, on_failure="warn")} if cls is maml.IMAML else {}
            learner = cls(net, lr=0.001, steps=steps, **kw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mem[cls.__name__, steps] = env.peak_memory(lambda: learner.meta_grad(b))
    assert mem["MAML", 8] > 3 * mem["MAML", 1]
    assert mem["IMAML", 8] < 1.3 * mem["IMAML", 1]


def test_pretrained_baseline_gradient_is_the_pooled_loss_gradient(device):
    net = mlp().to(device)
    b = batch(device)
    got, _ = maml.Pretrained(net).meta_grad(b)
    P = leaves(net, device)
    x = torch.cat([b.x_support, b.x_query], 1)
    y = torch.cat([b.y_support, b.y_query], 1)
    loss = sum(mse(functional_call(net, P, (x[i],)), y[i]) for i in range(b.tasks)) / b.tasks
    assert rel_err(got, dict(zip(P, torch.autograd.grad(loss, list(P.values()))))) <= 1e-10


def test_imaml_default_solver_is_five_warned_cg_iterations(device):
    learner = maml.IMAML(mlp(width=8).to(device), lr=0.05, steps=5, lam=2.0)
    assert learner.solve.func is linalg.cg and learner.solve.keywords == {"iters": 5, "on_failure": "warn"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grads, loss = learner.meta_grad(batch(device, tasks=3))
    assert learner.last_solve.iters <= 5 and set(grads) == set(learner.params)
    # meta_loss is the query loss at the adapted weights, for monitoring only
    assert float(learner.meta_loss(batch(device, tasks=3))) == pytest.approx(float(loss), rel=1e-12)


def test_meta_train_improves_and_is_quiet(capsys):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1))
    learner = maml.MAML(net, lr=0.01)
    s = Sinusoid()
    before = maml.evaluate(learner, s, shots=10, tasks=200, steps=1)
    curve = maml.meta_train(learner, s, iterations=300, meta_batch=10, shots=10, progress=False)
    after = maml.evaluate(learner, s, shots=10, tasks=200, steps=1)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert isinstance(curve, maml.LossCurve)
    assert len(curve.loss) == 300 and curve.iterations[-1] == 300
    assert after.mean[1] < 0.8 * before.mean[1]
    assert curve.smoothed(50)[-1] < curve.smoothed(50)[49]


def test_meta_train_seed_and_optimizers():
    def run(**kw):
        torch.manual_seed(0)
        learner = maml.MAML(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double(), lr=0.05)
        return maml.meta_train(learner, Sinusoid(dtype=torch.float64), iterations=5, meta_batch=3, progress=False, **kw)
    assert run(seed=3).loss == run(seed=torch.Generator().manual_seed(3)).loss != run(seed=4).loss
    sgd = run(optimizer="sgd", meta_lr=0.1).loss
    assert sgd == run(optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1)).loss != run(meta_lr=0.1).loss


def test_evaluate_student_t_ci_and_accuracy():
    s = Sinusoid(dtype=torch.float64)
    learner = maml.MAML(mlp(), lr=0.05)
    ev = maml.evaluate(learner, s, shots=5, query=20, tasks=50, steps=2, batch_size=20, seed=3)
    assert ev.per_task.shape == (50, 3) and ev.steps == [0, 1, 2]
    ci = stats.mean_ci(ev.per_task, dim=0)
    assert ev.mean == pytest.approx(ci.mean.tolist()) and ev.half_width == pytest.approx(ci.half_width.tolist())
    t = scipy.stats.t.ppf(0.975, 49)   # independent reference: Student t with n - 1 = 49 degrees of freedom
    assert ev.half_width[0] == pytest.approx(t * float(ev.per_task[:, 0].std()) / math.sqrt(50), rel=1e-12)
    assert ev.at(1) == (ev.mean[1], ev.half_width[1])
    # step 0 is the loss of the initialisation on the same tasks (the first batch_size of them)
    b = s.sample(20, 5, 20, seed=3)
    pred = learner.predict(learner.adapt(None, b, steps=0), b.x_query)
    assert ev.per_task[:20, 0].tolist() == pytest.approx(((pred - b.y_query) ** 2).mean((1, 2)).tolist(), rel=1e-12)
    assert ev.mean == maml.evaluate(learner, s, shots=5, query=20, tasks=50, steps=2, batch_size=20, seed=3).mean
    torch.manual_seed(0)
    clf = maml.MAML(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 5)), loss="cross_entropy", lr=0.5)
    ev = maml.evaluate(clf, DigitsEpisodes(5, split="test"), shots=1, query=5, tasks=40, steps=3)
    assert ev.metric == "accuracy" and all(0 <= a <= 1 for a in ev.mean)
    assert ev.mean[3] > ev.mean[0]  # adapting on one example per class beats the random initialisation


def test_evaluate_warns_when_adaptation_diverges():
    torch.manual_seed(0)
    learner = maml.MAML(nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 1)).double(), lr=50.0)
    with pytest.warns(RuntimeWarning, match="not finite"):
        ev = maml.evaluate(learner, Sinusoid(dtype=torch.float64), tasks=10, steps=5)
    assert math.isnan(ev.mean[-1]) and math.isfinite(ev.mean[0])


def test_batchnorm_running_stats_refused_with_the_fix():
    net = nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        maml.MAML(net)
    ok = nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.ReLU(), nn.Linear(8, 1))
    g, loss = maml.MAML(ok).meta_grad(Sinusoid().sample(4, 5, seed=0))
    assert torch.isfinite(loss) and set(g) == {k for k, _ in ok.named_parameters()}


def test_meta_train_divergence_raises_with_the_iteration():
    def relu_net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1)).double()
    s = Sinusoid(dtype=torch.float64)
    learner = maml.MAML(relu_net(), lr=1e3, steps=3)   # the inner loop explodes at once
    with pytest.raises(inner.DivergenceError, match=r"iteration 1 .*smaller lr .*smaller meta_lr"):
        maml.meta_train(learner, s, iterations=5, meta_batch=4, progress=False)
    assert all(bool(v.isfinite().all()) for v in learner.meta_parameters().values())
    learner = maml.MAML(relu_net(), lr=0.01)             # the outer loop explodes after a few steps
    with pytest.raises(inner.DivergenceError, match=r"at iteration ([2-9]|\d\d) .*meta_lr \(outer step size, now 1e\+06\)"):
        maml.meta_train(learner, s, iterations=50, meta_batch=4, meta_lr=1e6, optimizer="sgd", progress=False)
    assert issubclass(inner.DivergenceError, ValueError)


def test_batch_without_task_dimension_is_refused():
    learner = maml.MAML(mlp())
    b = batch("cpu")
    one = (b.x_support[0], b.y_support[0], b.x_query[0], b.y_query[0])   # [shots, 1]: no task dimension
    for call in (learner.meta_grad, learner.meta_loss):
        with pytest.raises(ValueError, match=r"x_support must have shape \[tasks, shots, features...\].*task dimension"):
            call(one)
    with pytest.raises(ValueError, match="task dimension"):
        learner.adapt(None, one[:2])
    learner.meta_grad(tuple(t[None] for t in one))   # the fix the message suggests works


def test_bad_inputs():
    net = mlp()
    learner = maml.MAML(net)
    b = batch("cpu")
    with pytest.raises(ValueError, match="same number of tasks"):
        learner.meta_loss((b.x_support, b.y_support, b.x_query[:2], b.y_query[:2]))
    with pytest.raises(ValueError, match="same number of shots"):
        learner.meta_grad((b.x_support, b.y_support[:, :3], b.x_query, b.y_query))
    with pytest.raises(ValueError, match="feature shape"):
        learner.meta_loss((b.x_support, b.y_support, b.x_query.expand(-1, -1, 2), b.y_query))
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        learner.adapt(None, b, steps=-1)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        maml.MAML(net, steps=-2)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        maml.evaluate(learner, Sinusoid(dtype=torch.float64), steps=-1)
    with pytest.raises(ValueError, match="steps"):
        learner.adapt(None, b, steps=1.5)
    for bad in (0, -0.01, float("nan")):
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            maml.MetaSGD(net, lr=bad)
    with pytest.raises(TypeError, match="lr"):
        maml.MAML(net, lr="fast")
    with pytest.raises(TypeError, match="float32"):
        learner.meta_loss(Sinusoid(dtype=torch.float32).sample(2, 3, seed=0))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        maml.MAML(lambda x: x)
    with pytest.raises(ValueError, match="loss"):
        maml.MAML(net, loss="hinge")
    with pytest.raises(TypeError, match="support"):
        learner.adapt(None, b.x_support)
    with pytest.raises(ValueError, match="params"):
        learner.adapt({"0.weight": torch.zeros(3, dtype=torch.float64)}, b)
    with pytest.raises(TypeError, match="sampler"):
        maml.meta_train(learner, [b], iterations=3, progress=False)
    with pytest.raises(TypeError, match="sampler"):
        maml.evaluate(learner, [b])
    with pytest.raises(TypeError, match="learner must be a maml.MetaLearner"):
        maml.meta_train(net, Sinusoid(dtype=torch.float64), iterations=1)
    with pytest.raises(TypeError, match="learner must be a maml.MetaLearner"):
        maml.evaluate(net, Sinusoid(dtype=torch.float64))
    with pytest.raises(ValueError, match="iterations"):
        maml.meta_train(learner, Sinusoid(dtype=torch.float64), iterations=0)
    with pytest.raises(ValueError, match="meta_lr"):
        maml.meta_train(learner, Sinusoid(dtype=torch.float64), iterations=1, meta_lr=-1.0)
    with pytest.raises(ValueError, match="meta_lr is ignored"):
        maml.meta_train(learner, Sinusoid(dtype=torch.float64), iterations=1, meta_lr=0.1,
                        optimizer=lambda ps: torch.optim.SGD(ps, lr=0.1))
    with pytest.raises(ValueError, match="optimizer"):
        maml.meta_train(learner, Sinusoid(dtype=torch.float64), iterations=1, optimizer="lbfgs")
    with pytest.raises(TypeError, match="seed"):
        maml.meta_train(learner, Sinusoid(dtype=torch.float64), iterations=1, seed=1.5)
    with pytest.raises(ValueError, match="lam"):
        maml.IMAML(net, lam=0)
    with pytest.raises(TypeError, match="solve must be a function"):
        maml.IMAML(net, solve="cg")
    with pytest.raises(TypeError, match=r"solve must return a linalg.SolveResult"):
        maml.IMAML(net, solve=lambda matvec, b: b).meta_grad(b)


def test_bad_loss_and_targets():
    b = batch("cpu")
    with pytest.raises(TypeError, match="loss must return a scalar torch.Tensor, got float"):
        maml.MAML(mlp(), loss=lambda pred, y: 0.5).meta_grad(b)
    with pytest.raises(ValueError, match=r"loss must return a scalar tensor \(shape \(\)\), got shape \(6, 1\)"):
        maml.MAML(mlp(), loss=lambda pred, y: (pred - y) ** 2).meta_grad(b)
    flat = TaskBatch(b.x_support, b.y_support[..., 0], b.x_query, b.y_query[..., 0])   # targets [tasks, shots]
    with pytest.raises(ValueError, match=r"output for one task has shape \(6, 1\) but the targets have shape \(6,\)"):
        maml.MAML(mlp()).meta_grad(flat)


def test_support_curvature_matches_the_explicit_hessian(device):
    """Largest eigenvalue of each task's support-loss Hessian (w.r.t. the adapted keys) vs torch.func.hessian."""
    from torch.func import hessian

    net = mlp(width=4).to(device)
    b = batch(device, tasks=3)
    for learner in (maml.MAML(net, lr=0.1), maml.ANIL(net, lr=0.1)):
        got = maml.support_curvature(learner, b, iters=300)
        keys = learner.adapted_keys
        base = {k: v.detach() for k, v in net.named_parameters()}
        for i in range(3):
            def f(flat):
                p, o = dict(base), 0
                for k in keys:
                    n = base[k].numel()
                    p[k] = flat[o:o + n].view_as(base[k])
                    o += n
                return mse(functional_call(net, p, (b.x_support[i],)), b.y_support[i])
            H = hessian(f)(torch.cat([base[k].flatten() for k in keys]))
            ev = torch.linalg.eigvalsh(H)
            top = ev[ev.abs().argmax()]
            assert float(got[i]) == pytest.approx(float(top), rel=1e-6)
    with pytest.raises(TypeError, match="support"):
        maml.support_curvature(maml.MAML(net), b.x_support)


def test_stability_limit_of_the_inner_step():
    """On a linear model (a quadratic loss), one step at lr < 2/L reduces the support loss, at lr > 2/L it can grow."""
    net = nn.Linear(3, 1, bias=False).double()
    b = Sinusoid(dtype=torch.float64).sample(4, 6, seed=0)
    b = TaskBatch(b.x_support.expand(-1, -1, 3) * torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64), b.y_support,
                  b.x_query.expand(-1, -1, 3), b.y_query)
    learner = maml.MAML(net)
    L = maml.support_curvature(learner, b, iters=200)
    for i in range(4):
        one = tuple(t[i:i + 1] for t in b)
        def support_loss_after(lr, steps=40):
            W = maml.MAML(net, lr=lr).adapt(None, one, steps=steps)
            return float(((learner.predict(W, one[0]) - one[1]) ** 2).mean())
        start = support_loss_after(1.0, steps=0)
        assert math.isfinite(float(L[i])) and float(L[i]) > 0
        assert support_loss_after(1.9 / float(L[i])) < start
        assert support_loss_after(2.1 / float(L[i])) > start


def test_pretrain_and_new_head():
    from metahpo_lib.maml import finetune

    torch.manual_seed(0)
    x, y = DigitsEpisodes(5, train_digits=(0, 1, 2, 3, 4), rotations=(0,)).dataset()
    net = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 5))
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    params, curve = finetune.pretrain(net, x, y, iterations=150, lr=1e-2, seed=0, progress=False)
    assert all(torch.equal(before[k], v) for k, v in net.named_parameters())   # the model is not changed
    acc = float((functional_call(net, params, (x,)).argmax(-1) == y).double().mean())
    assert acc > 0.9 and len(curve.loss) == 150
    again, _ = finetune.pretrain(net, x, y, iterations=150, lr=1e-2, seed=0, progress=False)
    assert all(torch.equal(params[k], again[k]) for k in params)                # seeded
    new = finetune.with_new_head(net, params, ways=3)
    assert torch.equal(new[0].weight, params["0.weight"]) and new[2].weight.shape == (3, 16)
    assert float(new[2].weight.detach().abs().sum()) == 0 and float(new[2].bias.detach().abs().sum()) == 0
    learner = maml.ANIL(new, loss="cross_entropy")
    assert learner.adapted_keys == ["2.weight", "2.bias"]
    with pytest.raises(TypeError, match="y must be a torch.long"):
        finetune.pretrain(net, x, y.double(), iterations=1, progress=False)
    with pytest.raises(ValueError, match="ways"):
        finetune.with_new_head(net, params, ways=1)
    with pytest.raises(ValueError, match="nn.Linear"):
        finetune.with_new_head(nn.Sequential(nn.ReLU(), nn.Tanh()).append(nn.Conv1d(1, 1, 1)), None, ways=2)
