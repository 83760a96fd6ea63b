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
from normopt.family.eigenbasis import (
    EigenbasisState,
    adam_diagonal,
    scale_by_eigenbasis,
    soap,
    splus,
    splus_eval_params,
)
from normopt.family.fadam import ScaleByFAdamState, fadam, scale_by_fadam
from normopt.family.hyperball import HyperballState, adamh, muonh, project_to_hyperball
from normopt.family.manifold import ScaleByManifoldMuonState, manifold_muon, scale_by_manifold_muon, stiefel_direction
from normopt.family.mirror import MirrorMap, exponentiated_gradient, mirror_descent, mirror_step
from normopt.family.newton import newton, scale_by_newton
from normopt.family.normuon import ScaleByNeuronRMSState, normuon, scale_by_neuron_rms
from normopt.family.prox import (
    ProxL1State,
    project,
    project_l1_ball,
    project_l2_ball,
    project_linf_ball,
    project_simplex,
    prox_l1,
)
from normopt.family.qk_clip import QKHeads, max_logit_attention, max_logits, muon_clip, qk_clip
from normopt.family.shampoo import ShampooState, scale_by_shampoo, shampoo
from normopt.polar import orthogonalize
from normopt.transforms import MomentumState, dualize, momentum

__version__ = "0.1.0"

__all__ = [
    "DionState",
    "EigenbasisState",
    "HyperballState",
    "MatrixDims",
    "MirrorMap",
    "MomentumState",
    "NormedTransformation",
    "ProxL1State",
    "QKHeads",
    "ScaleByFAdamState",
    "ScaleByManifoldMuonState",
    "ScaleByNeuronRMSState",
    "ShampooState",
    "adam_diagonal",
    "adamh",
    "describe",
    "dion",
    "dualize",
    "exponentiated_gradient",
    "fadam",
    "init",
    "layouts",
    "manifold_muon",
    "max_logit_attention",
    "max_logits",
    "mirror",
    "mirror_descent",
    "mirror_step",
    "momentum",
    "muon",
    "muon_clip",
    "muonh",
    "newton",
    "normalized_sgd",
    "norms",
    "normuon",
    "orthogonalize",
    "partition",
    "polar",
    "polargrad",
    "project",
    "project_l1_ball",
    "project_l2_ball",
    "project_linf_ball",
    "project_simplex",
    "project_to_hyperball",
    "prox",
    "prox_l1",
    "qk_clip",
    "scale_by_dion",
    "scale_by_eigenbasis",
    "scale_by_fadam",
    "scale_by_manifold_muon",
    "scale_by_neuron_rms",
    "scale_by_newton",
    "scale_by_shampoo",
    "scion",
    "shampoo",
    "sharding",
    "sign_sgd",
    "soap",
    "splus",
    "splus_eval_params",
    "steepest_descent",
    "stiefel_direction",
]
