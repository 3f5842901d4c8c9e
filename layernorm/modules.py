"""Modules identical to ``torch.nn.LayerNorm`` and ``torch.nn.RMSNorm``.

They *are* those modules: each subclasses PyTorch's class and replaces only
``forward``, so the constructor signature and defaults, the parameter names
(``weight``, ``bias``), ``reset_parameters``, ``extra_repr`` and the state_dict
keys are PyTorch's own, and code that asks ``isinstance(m, nn.LayerNorm)``
(weight-decay groups, weight initialisation in model libraries) keeps working
after :func:`layernorm.patch`. A state_dict saved from either class loads into
the other.

Each module has an ``impl`` attribute (default ``None``: automatic) that
forces an implementation for that module, as ``impl=`` does for the functions.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .functional import layer_norm, rms_norm

__all__ = ["LayerNorm", "RMSNorm"]


class LayerNorm(torch.nn.LayerNorm):
    r"""Applies Layer Normalization over a mini-batch of inputs (Ba et al., 2016).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    The mean and the (biased) variance are taken over the trailing
    ``normalized_shape`` dims of each sample; see :mod:`layernorm.reference`
    for the derivation of the forward and backward passes. Unlike batch
    normalization there are no running statistics: train and eval mode
    compute the same thing.

    Args:
        normalized_shape (int or list or torch.Size): the trailing shape to normalize.
        eps (float): added to the variance for numerical stability. Default: 1e-5.
        elementwise_affine (bool): learn a per-element gain :math:`\gamma` (``weight``,
            initialised to ones) and, if ``bias``, a bias :math:`\beta` (zeros). Default: True.
        bias (bool): learn :math:`\beta` too (only with ``elementwise_affine``). Default: True.
        device, dtype: where and in which dtype to create the parameters.

    Shape:
        - Input: :math:`(*, *\text{normalized\_shape})`
        - Output: same shape as the input

    Examples::

        >>> ln = LayerNorm(10)
        >>> ln(torch.randn(20, 5, 10)).shape
        torch.Size([20, 5, 10])
        >>> ln.load_state_dict(torch.nn.LayerNorm(10).state_dict())
        <All keys matched successfully>
    """

    impl: Optional[str] = None

    def forward(self, input: Tensor) -> Tensor:
        return layer_norm(
            input, self.normalized_shape, self.weight, self.bias, self.eps, impl=self.impl
        )


class RMSNorm(torch.nn.RMSNorm):
    r"""Applies Root Mean Square Layer Normalization (Zhang & Sennrich, 2019).

    .. math::
        y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} * \gamma

    Args:
        normalized_shape (int or list or torch.Size): the trailing shape to normalize.
        eps (float, optional): added under the square root. Default (``None``):
            ``torch.finfo(x.dtype).eps``, as in PyTorch.
        elementwise_affine (bool): learn a per-element gain (``weight``, ones). Default: True.
        device, dtype: where and in which dtype to create the parameters.

    Shape:
        - Input: :math:`(*, *\text{normalized\_shape})`
        - Output: same shape as the input

    Examples::

        >>> RMSNorm([5, 10])(torch.randn(2, 5, 10)).shape
        torch.Size([2, 5, 10])
    """

    impl: Optional[str] = None

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps, impl=self.impl)
