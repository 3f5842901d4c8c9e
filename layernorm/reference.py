r"""Layer normalization, written to be read: the math, the forward, the backward.

This module is the annotated reference of the package and the oracle every
faster implementation is tested against. It uses nothing but elementwise
tensor operations and reductions, so each line can be held against an
equation below.

.. _layer-norm-math:

What layer normalization computes
=================================

A layer's activations drift while the layers beneath it learn: the same
neuron sees inputs whose scale and offset keep changing. Normalization fixes
the first two moments of those inputs so each layer learns against a stable
footing. *Batch* normalization (`Ioffe & Szegedy, 2015
<https://arxiv.org/abs/1502.03167>`__) takes the moments of each feature over
the samples of a mini-batch. *Layer* normalization (`Ba, Kiros & Hinton, 2016
<https://arxiv.org/abs/1607.06450>`__) takes them over the features of each
sample instead.

Let one sample's activations be :math:`x \in \mathbb{R}^H`, the trailing
``normalized_shape`` flattened to :math:`H` elements. Layer normalization
computes

.. math::
    :label: layer-norm

    \mu = \frac{1}{H}\sum_{i=1}^{H} x_i, \qquad
    \sigma^2 = \frac{1}{H}\sum_{i=1}^{H} (x_i - \mu)^2, \qquad
    r = \frac{1}{\sqrt{\sigma^2 + \epsilon}},

    \hat{x}_i = (x_i - \mu)\, r, \qquad
    y_i = \gamma_i\, \hat{x}_i + \beta_i .

:math:`\gamma` (``weight``, the gain) and :math:`\beta` (``bias``) are learned,
one per element of ``normalized_shape``, and let the layer undo the
normalization where that helps. :math:`\epsilon` sits *inside* the square
root, as in PyTorch's :class:`torch.nn.LayerNorm` and
:func:`torch.nn.functional.layer_norm`, so a constant row gives
:math:`\hat{x} = 0`, not a division by zero. The variance is the biased one
(divide by :math:`H`).

.. _batch-norm-limits:

What it removes: four limits of batch normalization
===================================================

Because every statistic comes from the sample itself, layer normalization
does the same computation in training and in inference and needs nothing
from other samples. An experiment of this package shows each limit:

1. **No running statistics.** Batch normalization must keep running means
   and variances for inference, so a model behaves differently in train and
   eval mode, and its output for one input depends on its batch companions.
   Layer normalization keeps no state besides :math:`\gamma, \beta`. The
   :ref:`running-stats experiment <experiment-running-stats>` measures both
   effects.
2. **Recurrent networks.** Batch statistics would be needed per time step,
   and sequences at test time may be longer than any seen in training. Layer
   normalization is applied identically at every step of an RNN. The
   :ref:`rnn experiment <experiment-rnn>` trains the same LSTM with each.
3. **Small batches.** Batch statistics of 2 or 4 samples are noisy, and with
   one sample the variance is zero. Layer normalization works at batch size 1.
   The :ref:`small-batch experiment <experiment-small-batch>` trains at batch
   sizes from 1 to 128.
4. **Distributed training.** Exact batch statistics across devices need a
   collective (:class:`torch.nn.SyncBatchNorm`) in every normalization layer
   of every step. Layer normalization needs none. The :ref:`distributed
   experiment <experiment-distributed>` trains on 1, 2 and 4 processes and
   counts the collectives.

It is the normalization inside nearly every transformer (before each
attention and MLP block in the "pre-LN" layout); the :ref:`transformer
experiment <experiment-transformer>` trains that layout against post-LN and
against no normalization.

.. _numerical-stability:

Numerical stability
===================

The textbook shortcut :math:`\sigma^2 = \overline{x^2} - \mu^2` subtracts two
large, nearly equal numbers. For :math:`x = 10^4 + \mathcal{N}(0, 1)` in
float32, :math:`\overline{x^2} \approx 10^8` carries an absolute rounding error
of about 8, far more than the variance 1 it should reveal: the result is
garbage, often negative, and its square root NaN. This module never uses it.
It uses the *corrected two-pass* algorithm (`Chan, Golub & LeVeque, 1983
<https://www.jstor.org/stable/2683386>`__):

.. math::
    :label: two-pass

    m = \frac{1}{H}\sum_i x_i,\quad d_i = x_i - m,\quad
    c = \frac{1}{H}\sum_i d_i,\quad
    \mu = m + c,\quad \sigma^2 = \frac{1}{H}\sum_i d_i^2 - c^2 .

The deviations :math:`d_i` are small numbers computed almost exactly, and the
correction :math:`c` (zero in exact arithmetic) removes the rounding error of
the first mean. Half-precision inputs are computed in float32 and rounded
once at the end.

.. _backward-derived:

The backward pass, derived
==========================

Let :math:`L` be the loss and :math:`g_i = \partial L / \partial y_i` the
incoming gradient (``dy``). The parameters are the easy part: each
:math:`\gamma_i, \beta_i` is shared by all rows (samples) :math:`b`, so

.. math::
    :label: param-grads

    \frac{\partial L}{\partial \gamma_i} = \sum_b g_{b,i}\, \hat{x}_{b,i},
    \qquad
    \frac{\partial L}{\partial \beta_i} = \sum_b g_{b,i}.

For the input, write :math:`\hat{g}_i = g_i\gamma_i`, the gradient reaching
:math:`\hat{x}_i`. Every :math:`\hat{x}_j` depends on every :math:`x_i`
through :math:`\mu` and :math:`r`:

.. math::
    :label: dr-dx

    \frac{\partial \mu}{\partial x_i} = \frac{1}{H}, \qquad
    \frac{\partial r}{\partial x_i}
      = -\tfrac{1}{2}(\sigma^2+\epsilon)^{-3/2}\,\frac{2}{H}(x_i - \mu)
      = -\frac{r^2}{H}\,\hat{x}_i ,

(the term through :math:`\mu` in :math:`\partial\sigma^2/\partial x_i` is
:math:`-\frac{2}{H}\sum_j (x_j-\mu)/H = 0`), so

.. math::
    :label: dxhat-dx

    \frac{\partial \hat{x}_j}{\partial x_i}
      = r\Big(\delta_{ij} - \frac{1}{H}\Big) + (x_j-\mu)\frac{\partial r}{\partial x_i}
      = \frac{r}{H}\Big(H\delta_{ij} - 1 - \hat{x}_j\hat{x}_i\Big).

Summing against :math:`\hat{g}_j` gives the whole input gradient in one line:

.. math::
    :label: ln-dx

    \frac{\partial L}{\partial x_i}
      = r\left(\hat{g}_i - \frac{1}{H}\sum_j \hat{g}_j
        - \hat{x}_i\,\frac{1}{H}\sum_j \hat{g}_j\hat{x}_j\right).

The gradient is the incoming one with its mean removed and its component
along :math:`\hat{x}` removed, scaled by :math:`r`: exactly the two directions
in which normalization makes the output blind to the input. The backward
needs only :math:`x`, :math:`\gamma`, and the per-row :math:`\mu` and
:math:`r` saved by the forward; two row reductions (of :math:`\hat{g}` and of
:math:`\hat{g}\hat{x}`) and one elementwise pass give :math:`dx`.

The backward is itself made of differentiable tensor operations, so autograd
can differentiate it again, for second derivatives (``create_graph=True``:
gradient penalties, Hessian-vector products). Then :math:`\mu` and :math:`r`
must enter it as the functions of :math:`x` that they are, with the
derivatives :math:`\partial\mu/\partial x_i` and :math:`\partial r/\partial x_i`
above; the values saved by the forward are plain numbers without that
dependence. So a backward that will be differentiated recomputes :math:`\mu`
and :math:`r` from :math:`x` and runs the same formula.

.. _rmsnorm:

RMSNorm
=======

RMSNorm (`Zhang & Sennrich, 2019 <https://arxiv.org/abs/1910.07467>`__) drops
the mean subtraction and the bias and rescales by the root mean square, as
PyTorch's :class:`torch.nn.RMSNorm` and :func:`torch.nn.functional.rms_norm`
do:

.. math::
    :label: rms-norm

    r = \frac{1}{\sqrt{\frac{1}{H}\sum_i x_i^2 + \epsilon}}, \qquad
    \hat{x}_i = x_i\, r, \qquad y_i = \gamma_i \hat{x}_i .

With :math:`\partial r/\partial x_i = -\frac{r^2}{H}\hat{x}_i` as before and no
mean term, the same derivation gives

.. math::
    :label: rms-backward

    \frac{\partial L}{\partial x_i}
      = r\left(\hat{g}_i - \hat{x}_i\,\frac{1}{H}\sum_j \hat{g}_j\hat{x}_j\right),
    \qquad
    \frac{\partial L}{\partial \gamma_i} = \sum_b g_{b,i}\,\hat{x}_{b,i}.

.. _shapes:

Shapes
======

``x`` has any leading dims followed by ``normalized_shape``; the functions here
view it as a matrix of :math:`M` rows (samples) by :math:`H` features. ``mean``
and ``rstd`` have the leading shape of ``x`` (one per row) and are float32 for
half-precision inputs, float64 for float64 inputs.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

ShapeLike = Union[int, Sequence[int], torch.Size]

__all__ = [
    "layer_norm",
    "layer_norm_forward",
    "layer_norm_backward",
    "rms_norm",
    "rms_norm_forward",
    "rms_norm_backward",
]


def _feature_dims(x: Tensor, normalized_shape: ShapeLike) -> Tuple[int, ...]:
    """The trailing dims of ``x`` that ``normalized_shape`` covers."""
    count = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    return tuple(range(x.dim() - count, x.dim()))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half precision, whose significand of 8 bits (bfloat16) or 11
    bits (float16) cannot hold a sum of many terms; any other dtype as it is."""
    return torch.promote_types(dtype, torch.float32)


def _gain(weight: Optional[Tensor], weight_offset: float) -> Optional[Tensor]:
    r"""The gain :math:`\text{offset} + \gamma`, added in float32 or wider: the
    :math:`1 + \gamma` of Gemma's RMS norms, whose stored weight is centred on
    zero. Without an offset (or a weight), the weight as it is."""
    if not weight_offset or weight is None:
        return weight
    return weight.to(_compute_dtype(weight.dtype)) + weight_offset


def _affine(x_hat: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
    r""":math:`y = \gamma\,\hat{x} + \beta`, each factor optional, in the dtype of :math:`\hat{x}`."""
    y = x_hat
    if weight is not None:
        y = y * weight.to(x_hat.dtype)
    if bias is not None:
        y = y + bias.to(x_hat.dtype)
    return y


def _param_grads(
    dy: Tensor, x_hat: Tensor, leading: int, weight: Optional[Tensor], with_bias: bool
) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    r"""The parameters' gradients: :math:`\sum_b g_{b,i}\,\hat{x}_{b,i}` for
    :math:`\gamma_i` and :math:`\sum_b g_{b,i}` for :math:`\beta_i`, summed
    over the rows :math:`b` (the ``leading`` dims); ``None`` for a parameter
    that is absent."""
    def sum_rows(t: Tensor) -> Tensor:
        # A sum over the leading dims. With none there is a single row, already
        # its own sum: ``t.sum(())`` would reduce every dim instead.
        return t.sum(tuple(range(leading))) if leading else t

    dweight = sum_rows(dy * x_hat) if weight is not None else None
    dbias = sum_rows(dy) if with_bias else None
    return dweight, dbias


def layer_norm_forward(
    x: Tensor,
    normalized_shape: ShapeLike,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
) -> Tuple[Tensor, Tensor, Tensor]:
    r"""Forward pass: returns ``(y, mean, rstd)``.

    ``y`` has the dtype of ``x``; ``mean`` (:math:`\mu`) and ``rstd``
    (:math:`r = 1/\sqrt{\sigma^2+\epsilon}`) are kept per row in the compute
    dtype (float32, or float64 for float64 input) for the backward.
    """
    # The trailing dims that ``normalized_shape`` covers: the :math:`H` features of each row.
    dims = _feature_dims(x, normalized_shape)
    # Half precision is computed in float32; the result is rounded to the input's
    # dtype once, at the end.
    xc = x.to(_compute_dtype(x.dtype))
    # The moments by the corrected two-pass algorithm :eq:`two-pass`, never by
    # :math:`\overline{x^2} - \mu^2` (:ref:`numerical-stability`). First pass: the
    # plain mean :math:`m = \frac{1}{H}\sum_i x_i`.
    first_mean = xc.mean(dims, keepdim=True)
    # The deviations :math:`d_i = x_i - m`: small numbers, computed almost exactly.
    deviation = xc - first_mean
    # The correction :math:`c = \frac{1}{H}\sum_i d_i`: zero in exact arithmetic,
    # the rounding error of :math:`m` in floating point.
    correction = deviation.mean(dims, keepdim=True)
    # The mean :math:`\mu = m + c`.
    mean = first_mean + correction
    # Second pass: the biased variance :math:`\sigma^2 = \frac{1}{H}\sum_i d_i^2 - c^2`.
    variance = (deviation * deviation).mean(dims, keepdim=True) - correction * correction
    # :math:`r = 1/\sqrt{\sigma^2 + \epsilon}`, :math:`\epsilon` inside the root.
    # Rounding can leave :math:`\sigma^2` slightly below zero when the true variance
    # is zero or tiny, so it is clamped at zero first.
    rstd = torch.rsqrt(variance.clamp_min(0) + eps)
    # :math:`\hat{x}_i = (x_i - \mu)\,r`, with :math:`x_i - \mu = d_i - c` from the
    # deviations already computed.
    x_hat = (deviation - correction) * rstd
    # :math:`y_i = \gamma_i\,\hat{x}_i + \beta_i`, the last line of :eq:`layer-norm`.
    y = _affine(x_hat, weight, bias)
    # :math:`y` rounded to the input's dtype; :math:`\mu` and :math:`r`, one per row,
    # kept for the backward.
    return y.to(x.dtype), mean.squeeze(dims), rstd.squeeze(dims)


def layer_norm_backward(
    dy: Tensor,
    x: Tensor,
    weight: Optional[Tensor],
    mean: Tensor,
    rstd: Tensor,
    with_bias: bool = True,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    r"""Backward pass: ``(dx, dweight, dbias)`` from the forward's ``mean`` and ``rstd``.

    With :math:`\hat g = dy\cdot\gamma`, and a bar for the mean over the
    features of a row:

    .. math::

        \begin{aligned}
        dx &= r\,\big(\hat g - \overline{\hat g} - \hat x\,\overline{\hat g\hat x}\big),\\
        d\gamma &= \textstyle\sum_{\text{rows}} dy\,\hat x,\\
        d\beta &= \textstyle\sum_{\text{rows}} dy .
        \end{aligned}

    ``dweight`` is ``None`` when ``weight`` is; ``dbias`` is ``None`` unless
    ``with_bias``. Gradients come back in the dtypes of ``x`` and ``weight``.
    """
    # The saved :math:`\mu` and :math:`r` hold one value per row: their dims are the
    # leading dims of ``x``, and the dims after them are the :math:`H` features.
    leading = mean.dim()
    dims = tuple(range(leading, x.dim()))
    # Half precision is computed in float32, as in the forward.
    compute = _compute_dtype(x.dtype)
    # :math:`\mu` and :math:`r` as columns: one value, broadcast along its row.
    mean = mean.to(compute).reshape(mean.shape + (1,) * len(dims))
    rstd = rstd.to(compute).reshape(mean.shape)
    # :math:`\hat{x}_i = (x_i - \mu)\,r`, recomputed from :math:`x` and the two saved
    # statistics rather than saved: it is as large as :math:`x`.
    x_hat = (x.to(compute) - mean) * rstd
    # The incoming gradient :math:`g_i = \partial L / \partial y_i`.
    dyc = dy.to(compute)
    # :math:`\hat{g}_i = g_i\gamma_i`, the gradient reaching :math:`\hat{x}_i`
    # (without a weight, :math:`g` itself).
    g_hat = dyc * weight.to(compute) if weight is not None else dyc
    # First row reduction: :math:`\frac{1}{H}\sum_j \hat{g}_j`, the mean of :math:`\hat{g}`.
    mean_g = g_hat.mean(dims, keepdim=True)
    # Second row reduction: :math:`\frac{1}{H}\sum_j \hat{g}_j\hat{x}_j`, how much of
    # :math:`\hat{g}` lies along :math:`\hat{x}`.
    mean_gx = (g_hat * x_hat).mean(dims, keepdim=True)
    # :eq:`ln-dx`: both removed from :math:`\hat{g}`, and the rest scaled by :math:`r`:
    # :math:`\partial L / \partial x_i
    # = r\,(\hat{g}_i - \overline{\hat{g}} - \hat{x}_i\,\overline{\hat{g}\hat{x}})`.
    dx = rstd * (g_hat - mean_g - x_hat * mean_gx)
    # The parameters' gradients :eq:`param-grads`, sums over the rows.
    dweight, dbias = _param_grads(dyc, x_hat, leading, weight, with_bias)
    # Each gradient in the dtype of what it is the gradient of: ``dx`` in that of
    # ``x``, ``dweight`` and ``dbias`` in that of ``weight`` (``dbias`` in that of
    # ``dy`` when there is no weight).
    return (
        dx.to(x.dtype),
        dweight.to(weight.dtype) if dweight is not None else None,
        dbias.to(dy.dtype if weight is None else weight.dtype) if dbias is not None else None,
    )


def rms_norm_forward(
    x: Tensor,
    normalized_shape: ShapeLike,
    weight: Optional[Tensor] = None,
    eps: float = 1e-6,
) -> Tuple[Tensor, Tensor]:
    r"""RMSNorm forward: returns ``(y, rstd)``, :math:`r = 1/\sqrt{\overline{x^2}+\epsilon}`.

    There is no mean to subtract, so there is no cancellation to guard
    against: :math:`\overline{x^2}` is a sum of non-negative terms.
    """
    # The :math:`H` features of each row, in float32 for half precision, as above.
    dims = _feature_dims(x, normalized_shape)
    xc = x.to(_compute_dtype(x.dtype))
    # :math:`r = 1/\sqrt{\overline{x^2} + \epsilon}` :eq:`rms-norm`, in a single pass:
    # with no mean subtracted there is nothing to correct.
    rstd = torch.rsqrt((xc * xc).mean(dims, keepdim=True) + eps)
    # :math:`y_i = \gamma_i\,x_i\,r`: the input scaled by :math:`r`, then by the gain.
    y = _affine(xc * rstd, weight, None)
    # :math:`y` rounded to the input's dtype; :math:`r`, one per row, kept for the backward.
    return y.to(x.dtype), rstd.squeeze(dims)


def rms_norm_backward(
    dy: Tensor, x: Tensor, weight: Optional[Tensor], rstd: Tensor
) -> Tuple[Tensor, Optional[Tensor]]:
    r"""RMSNorm backward: ``(dx, dweight)``.

    .. math::

        \begin{aligned}
        dx &= r\,\big(\hat g - \hat x\,\overline{\hat g\hat x}\big),\\
        d\gamma &= \textstyle\sum_{\text{rows}} dy\,\hat x .
        \end{aligned}
    """
    # One saved :math:`r` per row, as in the backward of layer normalization; float32
    # for half precision.
    leading = rstd.dim()
    dims = tuple(range(leading, x.dim()))
    compute = _compute_dtype(x.dtype)
    # :math:`r` as a column, broadcast along its row.
    rstd = rstd.to(compute).reshape(rstd.shape + (1,) * len(dims))
    # :math:`\hat{x}_i = x_i\,r`, recomputed from :math:`x` and the saved :math:`r`.
    x_hat = x.to(compute) * rstd
    # The incoming gradient :math:`g_i = \partial L / \partial y_i`, and
    # :math:`\hat{g}_i = g_i\gamma_i` the gradient reaching :math:`\hat{x}_i`.
    dyc = dy.to(compute)
    g_hat = dyc * weight.to(compute) if weight is not None else dyc
    # The one row reduction, :math:`\frac{1}{H}\sum_j \hat{g}_j\hat{x}_j`: with no mean
    # in the forward, there is no mean of :math:`\hat{g}` to remove.
    mean_gx = (g_hat * x_hat).mean(dims, keepdim=True)
    # The input gradient :eq:`rms-backward`:
    # :math:`\partial L / \partial x_i = r\,(\hat{g}_i - \hat{x}_i\,\overline{\hat{g}\hat{x}})`.
    dx = rstd * (g_hat - x_hat * mean_gx)
    # The gain's gradient :math:`\partial L / \partial \gamma_i = \sum_b g_{b,i}\,\hat{x}_{b,i}`,
    # a sum over the rows.
    dweight, _ = _param_grads(dyc, x_hat, leading, weight, with_bias=False)
    # ``dx`` in the dtype of ``x``, ``dweight`` in that of ``weight``.
    return dx.to(x.dtype), dweight.to(weight.dtype) if dweight is not None else None


class _LayerNormFunction(torch.autograd.Function):
    """Ties the explicit forward and backward above into autograd."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight, bias, eps):
        y, mean, rstd = layer_norm_forward(x, normalized_shape, weight, bias, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.with_bias = bias is not None
        ctx.normalized_shape, ctx.eps = normalized_shape, eps
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        # With ``create_graph=True`` this backward is itself differentiated: :math:`\mu`
        # and :math:`r` are recomputed from :math:`x`, as the functions of :math:`x` they
        # are (:ref:`backward-derived`, last paragraph); the saved values have no derivative.
        if torch.is_grad_enabled():
            _, mean, rstd = layer_norm_forward(x, ctx.normalized_shape, None, None, ctx.eps)
        dx, dweight, dbias = layer_norm_backward(dy, x, weight, mean, rstd, ctx.with_bias)
        return dx, None, dweight, dbias, None


class _RMSNormFunction(torch.autograd.Function):
    """Ties the explicit RMSNorm forward and backward into autograd."""

    @staticmethod
    def forward(ctx, x, normalized_shape, weight, eps):
        y, rstd = rms_norm_forward(x, normalized_shape, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        ctx.normalized_shape, ctx.eps = normalized_shape, eps
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        # With ``create_graph=True``: :math:`r` recomputed from :math:`x`, as above.
        if torch.is_grad_enabled():
            _, rstd = rms_norm_forward(x, ctx.normalized_shape, None, ctx.eps)
        dx, dweight = rms_norm_backward(dy, x, weight, rstd)
        return dx, None, dweight, None


def layer_norm(
    x: Tensor,
    normalized_shape: ShapeLike,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
) -> Tensor:
    """Layer normalization whose gradient is the explicit backward above."""
    # Under :func:`torch.func.vmap`, :func:`~torch.func.grad` or :func:`~torch.func.jvp`
    # the forward runs as the tensor operations it is, for the transform to differentiate.
    if torch._C._are_functorch_transforms_active():
        return layer_norm_forward(x, normalized_shape, weight, bias, eps)[0]
    return _LayerNormFunction.apply(x, normalized_shape, weight, bias, eps)


def rms_norm(
    x: Tensor,
    normalized_shape: ShapeLike,
    weight: Optional[Tensor] = None,
    eps: float = 1e-6,
    weight_offset: float = 0.0,
) -> Tensor:
    """RMSNorm whose gradient is the explicit backward above."""
    weight = _gain(weight, weight_offset)
    # Under :func:`torch.func.vmap`, :func:`~torch.func.grad` or :func:`~torch.func.jvp`, as above.
    if torch._C._are_functorch_transforms_active():
        return rms_norm_forward(x, normalized_shape, weight, eps)[0]
    return _RMSNormFunction.apply(x, normalized_shape, weight, eps)
