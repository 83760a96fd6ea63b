"""normopt: optimizers built from a choice of norm, for JAX and Optax.

Pick a norm per parameter, turn the gradient into its steepest-descent direction under that norm (dualization),
choose the step size, apply weight decay. Sign SGD, normalized SGD, spectral descent / Muon, Scion and RMS→RMS
all come out of that one pipeline.
"""

from normopt import init, layouts, norms, partition, polar, sharding
from normopt._describe import describe
from normopt.alias import NormedTransformation, muon, normalized_sgd, polargrad, scion, sign_sgd, steepest_descent
from normopt.dims import MatrixDims
from normopt.family import mirror, prox
from normopt.family.dion import DionState, dion, scale_by_dion
from normopt.family.fadam import ScaleByFAdamState, fadam, scale_by_fadam
from normopt.family.mirror import MirrorMap, exponentiated_gradient, mirror_descent, mirror_step
from normopt.family.newton import newton, scale_by_newton
from normopt.family.prox import (
    ProxL1State,
    project,
    project_l1_ball,
    project_l2_ball,
    project_linf_ball,
    project_simplex,
    prox_l1,
)
from normopt.family.shampoo import ShampooState, scale_by_shampoo, shampoo
from normopt.polar import orthogonalize
from normopt.transforms import MomentumState, dualize, momentum

__version__ = "0.1.0"

__all__ = [
    "DionState",
    "MirrorMap",
    "ProxL1State",
    "ScaleByFAdamState",
    "ShampooState",
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
    "layouts",
    "momentum",
    "muon",
    "normalized_sgd",
    "norms",
    "orthogonalize",
    "partition",
    "polargrad",
    "polar",
    "scion",
    "sign_sgd",
    "steepest_descent",
]
