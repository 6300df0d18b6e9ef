"""Every module's ``>>>`` examples run, and every public function and class has one."""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import metahpo_lib

MODULES = sorted(m.name for m in pkgutil.walk_packages(metahpo_lib.__path__, "metahpo_lib."))


def public_items(module):
    """Functions and classes defined in ``module`` whose names do not start with '_'."""
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name, None)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
            yield name, obj


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"


@pytest.mark.parametrize("name", MODULES)
def test_every_public_function_and_class_has_an_example(name):
    module = importlib.import_module(name)
    missing = [n for n, obj in public_items(module) if ">>>" not in (obj.__doc__ or "")]
    assert not missing, f"{name}: public items without a '>>>' example in their docstring: {missing}"
