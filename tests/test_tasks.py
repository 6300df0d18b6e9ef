"""Task distributions (notebook 06): shapes, seeding, the sinusoid law, disjoint digit classes, bad input."""

import math

import numpy as np
import sklearn.datasets
import pytest
import torch

from metahpo_lib import tasks
from metahpo_lib.tasks import DigitsEpisodes, Sinusoid, TaskBatch, check_batch, check_sampler


def test_sinusoid_shapes_ranges_and_law(device):
    s = Sinusoid(device=device, dtype=torch.float64)
    batch, p = s.sample(30, 5, 7, seed=3, return_params=True)
    assert isinstance(batch, TaskBatch)
    assert batch.x_support.shape == (30, 5, 1) and batch.y_support.shape == (30, 5, 1)
    assert batch.x_query.shape == (30, 7, 1) and batch.y_query.shape == (30, 7, 1)
    assert batch.x_support.device.type == device.type and batch.x_support.dtype == torch.float64
    a, ph = p["amplitude"], p["phase"]
    assert bool(((a >= 0.1) & (a <= 5.0)).all()) and bool(((ph >= 0) & (ph <= math.pi)).all())
    for x in (batch.x_support, batch.x_query):
        assert bool(((x >= -5) & (x <= 5)).all())
    want = a[:, None, None] * torch.sin(batch.x_query - ph[:, None, None])
    torch.testing.assert_close(batch.y_query, want)
    # support and query are different draws
    assert not torch.equal(batch.x_support, batch.x_query[:, :5])


def test_sinusoid_covers_the_ranges():
    p = Sinusoid().sample_tasks(4000, seed=0)
    a, ph = p["amplitude"].double(), p["phase"].double()
    assert a.min() < 0.2 and a.max() > 4.9 and abs(float(a.mean()) - 2.55) < 0.1
    assert ph.min() < 0.05 and ph.max() > math.pi - 0.05


def test_sinusoid_seeded():
    s = Sinusoid()
    b1, b2, b3 = s.sample(4, 5, seed=1), s.sample(4, 5, seed=1), s.sample(4, 5, seed=2)
    assert all(torch.equal(u, v) for u, v in zip(b1, b2))
    assert not torch.equal(b1.x_support, b3.x_support)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(s.sample(3, 2, seed=g1).y_query, s.sample(3, 2, seed=g2).y_query)
    # a generator is the seed of the first call, then moves on: consecutive calls draw fresh tasks
    assert torch.equal(s.sample(3, 2, seed=torch.Generator().manual_seed(5)).y_query, s.sample(3, 2, seed=5).y_query)
    assert not torch.equal(s.sample(3, 2, seed=g1).y_query, s.sample(3, 2, seed=5).y_query)
    assert torch.equal(s.sample(4, 5).x_support, s.sample(4, 5, seed=0).x_support)   # the default seed is 0


def test_sinusoid_batch_for_one_task():
    b = Sinusoid().batch_for(2.0, 0.5, shots=10, query=3, seed=0)
    assert b.x_support.shape == (1, 10, 1) and b.x_query.shape == (1, 3, 1)
    torch.testing.assert_close(b.y_support, 2.0 * torch.sin(b.x_support - 0.5))


def _rotations_of(digits, rotations=(0, 1)):
    import sklearn.datasets

    d = sklearn.datasets.load_digits()
    imgs = torch.as_tensor(d.images / 16.0)
    keys = set()
    for dig in digits:
        for r in rotations:
            for im in torch.rot90(imgs[torch.as_tensor(d.target == dig)], r, dims=(1, 2)):
                keys.add(np.round(im.numpy(), 6).tobytes())
    return keys


def test_digits_episode_shapes_and_labels(device):
    ep = DigitsEpisodes(5, split="train", device=device)
    b = ep.sample(6, 3, 4, seed=0)
    assert b.x_support.shape == (6, 15, 64) and b.y_support.shape == (6, 15)
    assert b.x_query.shape == (6, 20, 64) and b.y_query.shape == (6, 20)
    assert b.y_support.dtype == torch.long and b.x_support.device.type == device.type
    for t in range(6):
        assert torch.bincount(b.y_support[t], minlength=5).tolist() == [3] * 5
        assert torch.bincount(b.y_query[t], minlength=5).tolist() == [4] * 5
    assert 0 <= float(b.x_support.min()) and float(b.x_support.max()) <= 1
    img = DigitsEpisodes(3, flatten=False).sample(2, 1, 1, seed=0)
    assert img.x_support.shape == (2, 3, 1, 8, 8)


def test_digits_splits_are_disjoint_and_no_support_query_overlap():
    train, test = DigitsEpisodes(5, split="train"), DigitsEpisodes(5, split="test")
    assert {d for d, _ in train.classes}.isdisjoint({d for d, _ in test.classes})
    train_keys = _rotations_of(range(6))
    b = test.sample(20, 2, 5, seed=1)
    for x in (b.x_support, b.x_query):
        for im in x.reshape(-1, 8, 8).double():
            assert np.round(im.numpy(), 6).tobytes() not in train_keys
    # within an episode no image is used twice (sampling without replacement; the 1797 images are distinct)
    bt = train.sample(10, 5, 10, seed=2)
    for t in range(10):
        keys = [v.numpy().tobytes() for v in torch.cat([bt.x_support[t], bt.x_query[t]])]
        assert len(set(keys)) == len(keys) == 75


def test_digits_classes_vary_and_seeded():
    ep = DigitsEpisodes(5)
    b1, p1 = ep.sample(50, 1, 1, seed=0, return_params=True)
    b2 = ep.sample(50, 1, 1, seed=0)
    assert torch.equal(b1.x_query, b2.x_query)
    assert len(torch.unique(p1["classes"])) == ep.num_classes  # every class shows up over 50 episodes


def test_check_batch_errors():
    s = Sinusoid()
    b = s.sample(5, 4, 6, seed=0)
    check_batch(b)
    with pytest.raises(ValueError, match="same number of tasks"):
        check_batch((b.x_support, b.y_support, b.x_query[:3], b.y_query[:3]))
    with pytest.raises(ValueError, match="same number of shots"):
        check_batch((b.x_support, b.y_support[:, :2], b.x_query, b.y_query))
    with pytest.raises(ValueError, match="feature shape"):
        check_batch((b.x_support, b.y_support, torch.zeros(5, 6, 2), b.y_query))
    with pytest.raises(ValueError, match=r"\[tasks, shots"):
        check_batch((b.x_support[0, :, 0], b.y_support, b.x_query, b.y_query))
    # one task without its task dimension is not read as 4 one-shot tasks
    with pytest.raises(ValueError, match=r"x_support must have shape \[tasks, shots, features...\], got shape \(4, 1\)"):
        check_batch((b.x_support[0], b.y_support[0], b.x_query[0], b.y_query[0]))
    with pytest.raises(ValueError, match=r"y_query must have shape \[tasks, shots, ...\].*task dimension"):
        check_batch((b.x_support, b.y_support, b.x_query, b.y_query[0, :, 0]))
    digits = DigitsEpisodes(5).sample(2, 1, 1, seed=0)
    check_batch(digits)   # class labels [tasks, shots] are fine
    with pytest.raises(ValueError, match="task dimension"):
        check_batch(tuple(t[0] for t in digits))
    with pytest.raises(TypeError, match="TaskBatch or a tuple"):
        check_batch(b.x_support)
    with pytest.raises(TypeError, match="x_support"):
        check_batch((b.x_support.long(), b.y_support, b.x_query, b.y_query))


def test_bad_arguments():
    with pytest.raises(ValueError, match="amplitude"):
        Sinusoid(amplitude=(5, 0.1))
    with pytest.raises(ValueError, match="shots"):
        Sinusoid().sample(3, 0)
    with pytest.raises(ValueError, match="tasks"):
        Sinusoid().sample(0, 5)
    with pytest.raises(TypeError, match="seed must be an int or a torch.Generator"):
        Sinusoid().sample(2, 2, seed=1.0)
    with pytest.raises(TypeError, match="seed"):
        DigitsEpisodes(5).sample(2, 1, seed="0")
    with pytest.raises(TypeError, match="generator"):   # one way to pass randomness: seed=
        Sinusoid().sample(2, 2, generator=torch.Generator())
    with pytest.raises(ValueError, match="ways"):
        DigitsEpisodes(9, split="test")
    with pytest.raises(ValueError, match="shots \\+ query"):
        DigitsEpisodes(5).sample(2, 100, 100)
    with pytest.raises(ValueError, match="train_digits"):
        DigitsEpisodes(5, train_digits=range(10))
    with pytest.raises(ValueError, match="split"):
        DigitsEpisodes(5, split="val")
    with pytest.raises(ValueError, match="rotations"):
        DigitsEpisodes(5, rotations=(0, 4))
    assert not hasattr(tasks, "make_generator")
    check_sampler(DigitsEpisodes(5))
    with pytest.raises(TypeError, match="sampler must have a method sample"):
        check_sampler(Sinusoid().sample(2, 2))


def test_digits_dataset_pools_the_split_with_class_labels():
    ep = DigitsEpisodes(5, split="test", train_digits=(0, 1, 2, 3, 4), rotations=(0, 1))
    x, y = ep.dataset()
    d = sklearn.datasets.load_digits()
    n = int(sum((d.target == k).sum() for k in range(5, 10)))
    assert x.shape == (2 * n, 64) and y.shape == (2 * n,) and y.dtype == torch.long
    assert torch.bincount(y).sum() == 2 * n and int(y.max()) == ep.num_classes - 1
    for c in (0, 3):   # images of class c are the digit turned by its rotation
        digit, rot = ep.classes[c]
        want = torch.rot90(torch.as_tensor(d.images[d.target == digit] / 16.0), rot, dims=(1, 2)).reshape(-1, 64)
        assert torch.allclose(x[y == c].double(), want)
    assert DigitsEpisodes(5, flatten=False).dataset()[0].shape[1:] == (1, 8, 8)
