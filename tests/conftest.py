"""Shared fixtures. The float64 numpy references (polar factor, norms' closed forms, input families) live in
tests/references.py."""

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)
