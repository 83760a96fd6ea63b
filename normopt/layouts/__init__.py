"""How each parameter is read — fan-in, fan-out and stack axes, and its role — from the model's structure.

One call per framework returns a :class:`Layouts` for every leaf of the model's parameters, which ``muon``,
``scion``, ``dion``, ``dualize`` and ``describe`` accept as ``layout=``:

    layout = normopt.layouts.nnx(model)                        # Flax NNX module graph
    layout = normopt.layouts.linen(module, x)                  # Flax linen: the modules that create each param
    layout = normopt.layouts.equinox(model)                    # Equinox ([out, in] weights)
    layout = normopt.layouts.torch(params)                     # trees ported from PyTorch ([out, in] weights)
    layout = normopt.layouts.logical(boxed_params)             # logical axis names (nn.with_logical_partitioning)
    tx = normopt.muon(1e-2, layout=layout)

Without a model, the optimizers fall back to reading parameter names (:func:`from_names`), which
``normopt.describe`` marks as such and ``strict=True`` refuses for matrices.
"""

from normopt.layouts._core import LAST_RESORT, ROLES, Layout, Layouts, matrix, vector
from normopt.layouts._equinox import equinox
from normopt.layouts._linen import linen
from normopt.layouts._logical import LOGICAL_RULES, logical
from normopt.layouts._names import EMBEDDING, HEAD
from normopt.layouts._nnx import nnx
from normopt.layouts._resolve import LayoutSpec, check_spec, from_names, read
from normopt.layouts._torch import torch

__all__ = [
    "EMBEDDING",
    "HEAD",
    "LAST_RESORT",
    "LOGICAL_RULES",
    "ROLES",
    "Layout",
    "LayoutSpec",
    "Layouts",
    "check_spec",
    "equinox",
    "from_names",
    "linen",
    "logical",
    "matrix",
    "nnx",
    "read",
    "torch",
    "vector",
]
