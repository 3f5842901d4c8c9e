"""Modules identical to ``torch.nn.LayerNorm`` and ``torch.nn.RMSNorm``.

They *are* those modules: each subclasses PyTorch's class and replaces only
``forward``, so the constructor signature and defaults, the parameter names
(``weight``, ``bias``), ``reset_parameters``, ``extra_repr`` and the state_dict
keys are PyTorch's own, and code that asks ``isinstance(m, nn.LayerNorm)``
(weight-decay groups, weight initialisation in model libraries) keeps working
after :func:`layernorm.patch`. A state_dict saved from either class loads into
the other.

Each module has an ``impl`` attribute (default ``None``: automatic) that
forces an implementation for that module, as ``impl=`` does for the functions
(the same names, in any case).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .functional import add_layer_norm, add_rms_norm, layer_norm, rms_norm

__all__ = ["LayerNorm", "RMSNorm", "AddLayerNorm", "AddRMSNorm"]


class LayerNorm(torch.nn.LayerNorm):
    r"""Applies Layer Normalization over a mini-batch of inputs (`Ba, Kiros & Hinton, 2016
    <https://arxiv.org/abs/1607.06450>`__).

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} * \gamma + \beta

    The mean and the (biased) variance are taken over the trailing
    ``normalized_shape`` dims of each sample; :doc:`/annotated/reference`
    derives the forward and backward passes beside the code of
    :mod:`layernorm.reference`. Unlike batch normalization there are no
    running statistics: train and eval mode compute the same thing.

    A drop-in for :class:`torch.nn.LayerNorm`: the same arguments, defaults,
    parameters and state dict.

    Args:
        normalized_shape (int or list or torch.Size): the trailing shape to normalize.
        eps (float): added to the variance for numerical stability. Default: 1e-5.
        elementwise_affine (bool): learn a per-element gain :math:`\gamma` (``weight``,
            initialised to ones) and, if ``bias``, a bias :math:`\beta` (zeros). Default: True.
        bias (bool): learn :math:`\beta` too (only with ``elementwise_affine``). Default: True.
        device, dtype: where and in which dtype to create the parameters.

    Shape:
        - Input: ``(*, *normalized_shape)``: any leading dims, then ``normalized_shape``
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
        """Normalize ``input`` over its trailing ``normalized_shape`` dims.

        Args:
            input (Tensor): any leading dims, then ``normalized_shape``.

        Returns:
            Tensor: the same shape and dtype as ``input``, computed by
            :func:`layernorm.layer_norm` with this module's ``impl``. Under
            TorchScript the scripted module runs
            :func:`torch.nn.functional.layer_norm` instead.
        """
        if torch.jit.is_scripting():  # TorchScript compiles PyTorch's op; Python runs ours
            return torch.nn.functional.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)
        return self._layernorm_forward(input)

    @torch.jit.unused
    def _layernorm_forward(self, input: Tensor) -> Tensor:
        return layer_norm(
            input, self.normalized_shape, self.weight, self.bias, self.eps, impl=self.impl
        )


class RMSNorm(torch.nn.RMSNorm):
    r"""Applies Root Mean Square Layer Normalization (`Zhang & Sennrich, 2019
    <https://arxiv.org/abs/1910.07467>`__).

    .. math::
        y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} * \gamma

    A drop-in for :class:`torch.nn.RMSNorm`: the same arguments, defaults,
    parameters and state dict.

    Args:
        normalized_shape (int or list or torch.Size): the trailing shape to normalize.
        eps (float, optional): added under the square root. Default (``None``):
            PyTorch's, the machine epsilon of the dtype the norm computes in
            (float32's for half-precision input; see
            :func:`layernorm.functional.default_rms_norm_eps`).
        elementwise_affine (bool): learn a per-element gain (``weight``, ones). Default: True.
        device, dtype: where and in which dtype to create the parameters.

    Shape:
        - Input: ``(*, *normalized_shape)``: any leading dims, then ``normalized_shape``
        - Output: same shape as the input

    Examples::

        >>> RMSNorm([5, 10])(torch.randn(2, 5, 10)).shape
        torch.Size([2, 5, 10])
    """

    impl: Optional[str] = None

    def forward(self, x: Tensor) -> Tensor:
        """Normalize ``x`` by the root mean square of its trailing ``normalized_shape`` dims.

        Args:
            x (Tensor): any leading dims, then ``normalized_shape``.

        Returns:
            Tensor: the same shape and dtype as ``x``, computed by
            :func:`layernorm.rms_norm` with this module's ``impl``. Under
            TorchScript the scripted module runs
            :func:`torch.nn.functional.rms_norm` instead.
        """
        if torch.jit.is_scripting():  # TorchScript compiles PyTorch's op; Python runs ours
            return torch.nn.functional.rms_norm(x, self.normalized_shape, self.weight, self.eps)
        return self._layernorm_forward(x)

    @torch.jit.unused
    def _layernorm_forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps, impl=self.impl)


class AddLayerNorm(LayerNorm):
    r"""Residual add + LayerNorm, fused: ``forward(x, residual) -> (y, x + residual)``.

    The pre-norm transformer block's ``h = h + sublayer(...); y = norm(h)`` in
    one call (see :func:`layernorm.functional.add_layer_norm`). Its parameters
    and state dict are those of :class:`torch.nn.LayerNorm`, so a checkpoint of a
    plain LayerNorm loads into it.

    Args:
        residual_in_fp32 (bool): keep the returned residual in float32 when the
            activations are half precision. Default: False.

    The other arguments are :class:`torch.nn.LayerNorm`'s.

    Examples::

        >>> norm = AddLayerNorm(16)
        >>> h = torch.randn(2, 16)
        >>> y, h = norm(torch.randn(2, 16), h)
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, residual_in_fp32: bool = False, device=None, dtype=None) -> None:
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype)
        self.residual_in_fp32 = residual_in_fp32

    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Add ``residual`` to ``input``, then normalize the sum.

        Args:
            input (Tensor): the sublayer's output; any leading dims, then ``normalized_shape``.
            residual (Tensor, optional): the residual stream, the shape of
                ``input``. ``None``: nothing is added (the first block).

        Returns:
            (Tensor, Tensor): ``(y, h)``, with ``h = input + residual`` (float32
            when ``residual_in_fp32``) and ``y`` its layer normalization, in
            the dtype of ``input``.
        """
        return add_layer_norm(
            input, residual, self.normalized_shape, self.weight, self.bias, self.eps,
            residual_in_fp32=self.residual_in_fp32, impl=self.impl,
        )

    def extra_repr(self) -> str:
        """LayerNorm's ``repr`` arguments, then ``residual_in_fp32``."""
        return super().extra_repr() + f", residual_in_fp32={self.residual_in_fp32}"


class AddRMSNorm(RMSNorm):
    r"""Residual add + RMSNorm, fused: ``forward(x, residual) -> (y, x + residual)``.

    See :class:`AddLayerNorm`; the parameters are :class:`torch.nn.RMSNorm`'s.
    """

    def __init__(self, normalized_shape, eps: Optional[float] = None, elementwise_affine: bool = True,
                 residual_in_fp32: bool = False, device=None, dtype=None) -> None:
        super().__init__(normalized_shape, eps, elementwise_affine, device, dtype)
        self.residual_in_fp32 = residual_in_fp32

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Add ``residual`` to ``x``, then normalize the sum by its root mean square.

        Args:
            x (Tensor): the sublayer's output; any leading dims, then ``normalized_shape``.
            residual (Tensor, optional): the residual stream, the shape of
                ``x``. ``None``: nothing is added (the first block).

        Returns:
            (Tensor, Tensor): ``(y, h)``, with ``h = x + residual`` (float32
            when ``residual_in_fp32``) and ``y`` its RMS normalization, in the
            dtype of ``x``.
        """
        return add_rms_norm(
            x, residual, self.normalized_shape, self.weight, self.eps,
            residual_in_fp32=self.residual_in_fp32, impl=self.impl,
        )

    def extra_repr(self) -> str:
        """RMSNorm's ``repr`` arguments, then ``residual_in_fp32``."""
        return super().extra_repr() + f", residual_in_fp32={self.residual_in_fp32}"
