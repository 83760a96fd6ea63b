"""The last resort: reading a leaf from its parameter names when no model is given.

Used only when the optimizer gets no ``layout`` from :mod:`normopt.layouts`; :func:`normopt.describe` marks these
readings with source ``"names"`` and ``strict=True`` turns them into errors for every leaf with ≥ 2 dimensions.
Patterns are searched case-insensitively in the path joined by ``/``; Flax layouts are assumed:

* a leaf with < 2 dimensions, or whose last name is a bias, or a norm's scale (``scale``, ``gamma``, ``weight`` of
  a ``*norm*``/``ln_*`` module): a vector; its leading axes are stack axes (an ``(L, d)`` scale is L vectors);
* a ≥ 3-D leaf whose path contains ``conv``: a conv kernel ``[*window, in, out]`` read as ``[prod(window)·in, out]``;
* a ≥ 3-D attention projection into heads (``query``/``key``/``value``, ``q_proj``…``v_proj``, ``wq``/``wk``/``wv``,
  ``c_attn``, ``wqkv``, ``qkv``) ``[..., features, heads, head_dim]``: fan-in the features axis, fan-out
  ``heads·head_dim``; out of heads (``out``, ``o_proj``, ``out_proj``, ``attn_out_proj``, ``wo``, ``c_proj``)
  ``[..., heads, head_dim, features]``: fan-in ``heads·head_dim``;
* anything else: ``[..., fan_in, fan_out]`` with leading stack axes;
* roles: :data:`EMBEDDING` and :data:`HEAD` names, else hidden.
"""

from __future__ import annotations

import re

from normopt.layouts._core import LAST_RESORT, Layout

EMBEDDING = r"(^|/)([a-z]+_)?(embedding|embeddings|embed|emb|wte|wpe|embed_tokens|tok_embeddings|token_embedder)(/|$)"
"""Embedding names: ``embed``, ``embedding(s)``, ``wte``/``wpe`` (GPT-2), ``embed_tokens`` (Llama), ``pos_emb``,
``pos_embedding``, ``word_embeddings``, ``position_embeddings``, ``tok_embeddings``, ...: input lookup tables."""

HEAD = (
    r"(^|/)(head|lm_head|readout|classifier|logits|unembed|unembedding|cls|output_layer|output_head)(/|$)"
    r"|^(params/)?(output|out|fc_out)(/|$)"
)
"""Output-head names (``head``, ``lm_head``, ``classifier``, ``unembed``, ``cls`` (BERT), ...); ``output``, ``out``
and ``fc_out`` count only as top-level modules (BERT's blocks have an ``output`` sublayer)."""

INTO_HEADS = ("query", "key", "value", "q_proj", "k_proj", "v_proj", "wq", "wk", "wv", "c_attn", "wqkv", "qkv")
OUT_OF_HEADS = ("out", "o_proj", "out_proj", "attn_out_proj", "wo", "c_proj")
VECTOR_NAMES = ("bias", "scale", "gamma")
NORM_MODULE = r"(norm|^ln(_|\d|$))"
PARAM_NAMES = ("kernel", "weight", "w", "embedding")


def _search(pattern: str, joined: str) -> bool:
    return re.search(pattern, joined, flags=re.IGNORECASE) is not None


def is_norm_scale(path: tuple[str, ...]) -> bool:
    """Whether ``path`` names a normalization layer's scale or bias (``.../LayerNorm_0/scale``, ``ln_f/weight``)."""
    if not path:
        return False
    last = path[-1].lower()
    return last in ("scale", "gamma") or (len(path) >= 2 and _search(NORM_MODULE, path[-2]))


def read(path: tuple[str, ...], shape: tuple[int, ...]) -> Layout:
    """The last-resort reading of the leaf at ``path`` with ``shape`` (see the module docstring)."""
    ndim = len(shape)
    names = [p.lower() for p in path]
    joined = "/".join(names)
    last = names[-1] if names else ""
    if ndim < 2 or last in VECTOR_NAMES or is_norm_scale(path):
        return Layout("vector", (), (), tuple(range(max(ndim - 1, 0))), LAST_RESORT)
    role = "embedding" if _search(EMBEDDING, joined) else "head" if _search(HEAD, joined) else "hidden"
    owner = names[-2] if len(names) >= 2 and last in PARAM_NAMES else last
    if ndim >= 3 and "conv" in joined:
        fan_in, fan_out = tuple(range(ndim - 1)), (ndim - 1,)
    elif ndim >= 3 and owner in INTO_HEADS:
        fan_in, fan_out = (ndim - 3,), (ndim - 2, ndim - 1)
    elif ndim >= 3 and owner in OUT_OF_HEADS:
        fan_in, fan_out = (ndim - 3, ndim - 2), (ndim - 1,)
    else:
        fan_in, fan_out = (ndim - 2,), (ndim - 1,)
    batch = tuple(a for a in range(ndim) if a not in fan_in + fan_out)
    return Layout(role, fan_in, fan_out, batch, LAST_RESORT)
