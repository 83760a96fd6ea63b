"""normopt: optimizers built from a choice of norm, for JAX and Optax.

Pick a norm per parameter, turn the gradient into its steepest-descent direction under that norm (dualization),
choose the step size, apply weight decay. Sign SGD, normalized SGD, spectral descent / Muon, Scion and RMS→RMS
all come out of that one pipeline.
"""

from normopt import init, mirror, norms, partition, polar, prox, sharding
from normopt.alias import NormedTransformation, muon, normalized_sgd, scion, sign_sgd, steepest_descent
from normopt.dims import MatrixDims
from normopt.dion import dion, scale_by_dion
from normopt.fadam import fadam, scale_by_fadam
from normopt.mirror import exponentiated_gradient, mirror_descent, mirror_step
from normopt.newton import newton, scale_by_newton
from normopt.partition import describe
from normopt.polar import orthogonalize
from normopt.prox import project, project_l1_ball, project_l2_ball, project_linf_ball, project_simplex, prox_l1
from normopt.shampoo import scale_by_shampoo, shampoo
from normopt.transforms import MomentumState, dualize, momentum

__version__ = "0.1.0"

__all__ = [
    "dion",
    "scale_by_dion",
    "sharding",
    "exponentiated_gradient",
    "fadam",
    "mirror",
    "mirror_descent",
    "mirror_step",
    "newton",
    "project",
    "project_l1_ball",
    "project_l2_ball",
    "project_linf_ball",
    "project_simplex",
    "prox",
    "prox_l1",
    "scale_by_fadam",
    "scale_by_newton",
    "scale_by_shampoo",
    "shampoo",
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
