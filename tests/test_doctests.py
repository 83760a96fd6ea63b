"""Every ``Examples:`` block in normopt's docstrings runs and prints what it shows (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import normopt

MODULES = sorted(m.name for m in pkgutil.walk_packages(normopt.__path__, "normopt."))


@pytest.mark.slow  # ≈ 30 s of CPU: every module's examples, compiled
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"
