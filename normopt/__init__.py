"""normopt: optimizers built from a choice of norm, for JAX and Optax.

Pick a norm per parameter, turn the gradient into its steepest-descent direction under that norm (dualization),
choose the step size, apply weight decay. Sign SGD, normalized SGD, spectral descent / Muon, Scion and RMS→RMS
all come out of that one pipeline.
"""

from normopt import init, norms, partition, polar
from normopt.alias import NormedTransformation, muon, normalized_sgd, scion, sign_sgd, steepest_descent
from normopt.dims import MatrixDims
from normopt.partition import describe
from normopt.polar import orthogonalize
from normopt.transforms import MomentumState, dualize, momentum

__version__ = "0.1.0"

__all__ = [
    "MatrixDims",
    "MomentumState",
    "NormedTransformation",
    "describe",
    "dualize",
    "init",
    "momentum",
    "muon",
    "normalized_sgd",
    "norms",
    "orthogonalize",
    "partition",
    "polar",
    "scion",
    "sign_sgd",
    "steepest_descent",
]
