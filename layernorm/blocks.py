r"""PyTorch's transformer layers with each residual add fused into the norm that follows it.

``torch.nn.TransformerEncoderLayer`` and ``torch.nn.TransformerDecoderLayer``
add every sublayer's output :math:`s_i` (self-attention, cross-attention,
feed-forward) to the residual stream :math:`x`. Where the sum is normalised
next, the add and the norm can be one :func:`layernorm.add_layer_norm` call,
which reads :math:`x` and :math:`s_i` once and writes :math:`x + s_i` and
:math:`\mathrm{LN}(x + s_i)` once, instead of an add that writes the sum and a
norm that reads it back (5 passes over a row become 4):

- post-norm (``norm_first=False``): :math:`x \leftarrow \mathrm{LN}_i(x + s_i)`
  for every sublayer: each add is fused, and the sum itself is not kept;
- pre-norm (``norm_first=True``): :math:`x \leftarrow x + s_i(\mathrm{LN}_i(x))`:
  the add after sublayer :math:`i` is fused with :math:`\mathrm{LN}_{i+1}`;
  the last add of the layer is left alone, its norm being in the next layer.

The classes here subclass PyTorch's and replace only ``forward``, so
parameters, state dicts, ``repr`` and ``isinstance`` checks are PyTorch's;
``layernorm.patch(model, fuse_add=True)`` swaps them in place. The math is
PyTorch's: the same sublayers (``_sa_block``, ``_mha_block``, ``_ff_block``,
dropout included) in the same order, only the add and the norm run together.

Two choices, where PyTorch's own forward does something we do not:

- Inference with nothing to differentiate (eval mode and no gradient wanted)
  goes to PyTorch's forward, whose fast path runs the whole encoder layer as
  one fused native op (and takes nested tensors); our norm modules still run
  when it takes its regular path.
- A norm that is neither a LayerNorm nor an RMSNorm (PyTorch's or ours; a
  subclass with its own ``forward``, say) is called as is after a plain add.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import modules
from .functional import add_layer_norm, add_rms_norm

__all__ = ["TransformerEncoderLayer", "TransformerDecoderLayer", "add_then_norm"]

_LAYER_NORMS = (torch.nn.LayerNorm, modules.LayerNorm)
_RMS_NORMS = (torch.nn.RMSNorm, modules.RMSNorm)


def add_then_norm(x: Tensor, s: Tensor, norm: torch.nn.Module) -> Tuple[Tensor, Tensor]:
    """``(norm(x + s), x + s)``, fused when ``norm`` is a plain LayerNorm or RMSNorm.

    The sum has PyTorch's dtype for ``x + s`` (the promoted one: a float32
    residual stream stays float32 when the sublayer returns bfloat16 under
    autocast), so the fused call takes the summand of that dtype as its input.
    """
    kind = type(norm)
    if kind not in _LAYER_NORMS + _RMS_NORMS:
        h = x + s
        return norm(h), h
    first, second = (x, s) if torch.promote_types(x.dtype, s.dtype) == x.dtype else (s, x)
    impl = getattr(norm, "impl", None)
    if kind in _LAYER_NORMS:
        return add_layer_norm(first, second, norm.normalized_shape, norm.weight, norm.bias, norm.eps, impl=impl)
    return add_rms_norm(first, second, norm.normalized_shape, norm.weight, norm.eps, impl=impl)


def _pure_inference(module: torch.nn.Module, *inputs: Optional[Tensor]) -> bool:
    """Eval mode and no gradient wanted: when PyTorch's encoder may take its fused fast path."""
    if module.training:
        return False
    if not torch.is_grad_enabled():
        return True
    return not any(p.requires_grad for p in module.parameters()) and not any(
        t is not None and t.requires_grad for t in inputs)


class TransformerEncoderLayer(torch.nn.TransformerEncoderLayer):
    """``torch.nn.TransformerEncoderLayer`` with fused residual add + norm (see the module docs)."""

    def forward(self, src: Tensor, src_mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None, is_causal: bool = False) -> Tensor:
        if src.is_nested or _pure_inference(self, src):
            return super().forward(src, src_mask, src_key_padding_mask, is_causal)
        # PyTorch's forward canonicalises the masks (bool -> float) before using them; so do we.
        src_key_padding_mask = F._canonical_mask(
            mask=src_key_padding_mask, mask_name="src_key_padding_mask",
            other_type=F._none_or_dtype(src_mask), other_name="src_mask", target_type=src.dtype)
        src_mask = F._canonical_mask(
            mask=src_mask, mask_name="src_mask", other_type=None, other_name="",
            target_type=src.dtype, check_other=False)
        x = src
        if self.norm_first:
            s = self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            y, x = add_then_norm(x, s, self.norm2)
            return x + self._ff_block(y)
        x, _ = add_then_norm(x, self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal), self.norm1)
        x, _ = add_then_norm(x, self._ff_block(x), self.norm2)
        return x


class TransformerDecoderLayer(torch.nn.TransformerDecoderLayer):
    """``torch.nn.TransformerDecoderLayer`` with fused residual add + norm (see the module docs)."""

    def forward(self, tgt: Tensor, memory: Tensor, tgt_mask: Optional[Tensor] = None,
                memory_mask: Optional[Tensor] = None, tgt_key_padding_mask: Optional[Tensor] = None,
                memory_key_padding_mask: Optional[Tensor] = None, tgt_is_causal: bool = False,
                memory_is_causal: bool = False) -> Tensor:
        if tgt.is_nested or _pure_inference(self, tgt, memory):
            return super().forward(tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
                                   memory_key_padding_mask, tgt_is_causal, memory_is_causal)
        x = tgt
        if self.norm_first:
            s = self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            y, x = add_then_norm(x, s, self.norm2)
            s = self._mha_block(y, memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            y, x = add_then_norm(x, s, self.norm3)
            return x + self._ff_block(y)
        x, _ = add_then_norm(x, self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal), self.norm1)
        s = self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal)
        x, _ = add_then_norm(x, s, self.norm2)
        x, _ = add_then_norm(x, self._ff_block(x), self.norm3)
        return x
