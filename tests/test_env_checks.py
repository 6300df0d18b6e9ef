import pytest
import torch

from metahpo_lib import checks, env
from metahpo_lib.checks import ch01


def test_env_report(capsys):
    info = env.report()
    assert info["torch"] == torch.__version__ and info["device"] in {"cpu", "cuda"}
    assert env.default_device() == env.available_devices()[-1]
    env.print_report()
    assert "torch" in capsys.readouterr().out


def _ridge(X, y, alpha):
    return ch01.ref_ridge_closed_form(X, y, alpha)


def test_checks_pass_on_the_reference(capsys):
    ch01.ridge_closed_form(_ridge)
    ch01.validation_curve(ch01.ref_validation_curve)
    ch01.expected_improvement(ch01.ref_expected_improvement)
    ch01.ridge_hypergradient(ch01.ref_ridge_hypergradient)
    assert capsys.readouterr().out.count("✔") == 4


@pytest.mark.parametrize("wrong, message", [
    (lambda X, y, a: _ridge(X, y, a)[:-1], "should have shape (5,), but has shape (4,)"),
    (lambda X, y, a: _ridge(X, y, a) * 1.01, "differs from the reference: largest difference"),
    (lambda X, y, a: _ridge(X, y, a).tolist(), "should be a tensor of shape (5,)"),
    (lambda X, y, a: 1 / 0, "raised ZeroDivisionError"),
])
def test_checks_say_what_differs(wrong, message):
    with pytest.raises(AssertionError, match="n=40, d=5") as e:
        ch01.ridge_closed_form(wrong)
    assert message in str(e.value)


def test_not_implemented_passes_through():
    def unsolved(X, y, alpha):
        raise NotImplementedError()

    with pytest.raises(NotImplementedError):
        ch01.ridge_closed_form(unsolved)


def test_describe_difference_on_dicts_and_numbers():
    t = torch.ones(2)
    assert checks.describe_difference({"a": t}, {"a": t}, rtol=0, atol=0) is None
    assert "keys ['a']" in checks.describe_difference({"b": t}, {"a": t}, rtol=0, atol=0)
    assert "is 2, expected 1" in checks.describe_difference(2.0, 1.0, rtol=1e-9, atol=0)
