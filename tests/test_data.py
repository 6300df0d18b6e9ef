import numpy as np
import pytest
import torch

from metahpo_lib import data


def test_load_is_seeded_standardised_and_disjoint(device):
    a, b = data.load("diabetes", seed=3, device=device), data.load("diabetes", seed=3, device=device)
    assert torch.equal(a.X_train, b.X_train) and a.X_train.device.type == device.type
    assert a.X_train.dtype == torch.float64
    assert torch.allclose(a.X_train.mean(0), torch.zeros(10, dtype=torch.float64, device=device), atol=1e-12)
    assert torch.allclose(a.X_train.std(0, unbiased=False), torch.ones(10, dtype=torch.float64, device=device))
    assert abs(a.y_train.mean().item()) < 1e-12
    assert a.X_train.shape[0] + a.X_val.shape[0] + a.X_test.shape[0] == 442
    rows = {tuple(r) for r in torch.cat([a.X_train, a.X_val, a.X_test]).cpu().numpy().round(8)}
    assert len(rows) == 442  # every example in exactly one part
    assert not torch.equal(data.load("diabetes", seed=4).X_train, a.X_train.cpu())


def test_classification_labels_and_float32():
    s = data.load("digits", seed=0, dtype=torch.float32)
    assert data.load("breast_cancer").feature_names[0] == "mean radius"
    assert s.task == "classification" and s.y_train.dtype == torch.long and s.num_classes == 10
    assert s.X_train.dtype == torch.float32 and s.X_train.shape[1] == 64


def test_make_regression_condition_number():
    s = data.make_regression(2000, 50, condition=1e4, seed=0)
    eig = torch.linalg.eigvalsh(s.X_train.T @ s.X_train)
    assert 3e3 < (eig.max() / eig.min()).item() < 3e4
    assert torch.allclose(s.X_train.mean(0), torch.zeros(50, dtype=torch.float64), atol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="name must be one of"):
        data.load("mnist")
    with pytest.raises(ValueError, match="split fractions"):
        data.load("diabetes", split=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="X contains NaN"):
        data.from_arrays(np.array([[np.nan], [1.0]]), np.array([0.0, 1.0]), task="regression")
    with pytest.raises(ValueError, match="task must be one of"):
        data.from_arrays(np.ones((4, 1)), np.ones(4), task="ranking")
    with pytest.raises(ValueError, match="condition must be"):
        data.make_regression(condition=0)


def test_splits_too_small_or_bad_targets_are_refused():
    with pytest.raises(ValueError, match="fewer than 2 examples"):
        data.from_arrays(np.random.default_rng(0).normal(size=(5, 2)), np.arange(5.0), task="regression",
                         split=(0.8, 0.1, 0.1))
    with pytest.raises(ValueError, match="y contains NaN"):
        data.from_arrays(np.ones((10, 2)), np.r_[np.nan, np.ones(9)], task="regression")
    with pytest.raises(ValueError, match="y is constant"):
        data.from_arrays(np.random.default_rng(0).normal(size=(10, 2)), np.ones(10), task="regression")
