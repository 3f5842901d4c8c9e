"""The one comparison of the Triton kernels that the interpreter tests (tests/test_kernels.py) and
the GPU tests (tests/gpu) share.

:func:`check` runs the forward and the backward of :mod:`layernorm.kernels.ops` on ``x``'s device
and compares y (and r') and every gradient with float64 autograd on the same values. Tolerance
rule: the kernels' error may be at most twice PyTorch's own error in that dtype (on the same
device), plus a small atol: half a unit of roundoff on a GPU, one unit under the interpreter,
which casts float32 to bfloat16 by truncation where the GPU rounds to nearest.
"""

import torch
import torch.nn.functional as F

from helpers import randn, relative_error

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
KINDS = ("layer", "rms", "add_layer", "add_rms")


def atol(dtype: torch.dtype, device) -> float:
    unit = {torch.float32: 1e-5, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    return unit if torch.device(device).type == "cpu" or dtype == torch.float32 else unit / 2


def leaves(*tensors):
    return [None if t is None else t.detach().clone().requires_grad_() for t in tensors]


def torch_norm(kind, x, residual, normalized_shape, weight, bias, eps, residual_dtype):
    """PyTorch's ops: (y, r'), r' the sum in ``residual_dtype`` (x itself for a plain norm)."""
    if kind.startswith("add"):
        r = x.to(residual_dtype) if residual is None else x.to(residual_dtype) + residual.to(residual_dtype)
        inp = r if r.dtype == torch.float64 else r.to(x.dtype)
    else:
        r, inp = x, x
    if kind.endswith("rms"):
        return F.rms_norm(inp, normalized_shape, weight, eps), r
    return F.layer_norm(inp, normalized_shape, weight, bias, eps), r


def ours(kind, x, residual, normalized_shape, weight, bias, eps, residual_in_fp32):
    from layernorm.kernels import ops

    if kind == "layer":
        return ops.triton_layer_norm(x, normalized_shape, weight, bias, eps), None
    if kind == "rms":
        return ops.triton_rms_norm(x, normalized_shape, weight, eps), None
    if kind == "add_layer":
        return ops.triton_add_layer_norm(x, residual, normalized_shape, weight, bias, eps, residual_in_fp32)
    return ops.triton_add_rms_norm(x, residual, normalized_shape, weight, eps, residual_in_fp32)


def check(kind, x, normalized_shape, weight=None, bias=None, eps=1e-5, residual=None, residual_in_fp32=False):
    """Forward and backward of the kernels against float64, within the tolerance rule; returns
    the kernels' (y, r') and their gradients of (x, residual, weight, bias)."""
    if kind.endswith("rms"):
        bias = None
    dtype = x.dtype
    residual_dtype = torch.float32 if residual_in_fp32 else dtype
    is_add = kind.startswith("add")
    dy = randn(*x.shape, dtype=dtype, seed=7, device=x.device)
    dres = randn(*x.shape, dtype=residual_dtype, seed=8, device=x.device) if is_add else None

    def grads(outs, ins):
        y, r = outs
        pairs = [(y, dy.to(y.dtype))] + ([(r, dres.to(r.dtype))] if is_add else [])
        want = [t for t in ins if t is not None]
        got = torch.autograd.grad([p[0] for p in pairs], want, [p[1] for p in pairs], allow_unused=True)
        it = iter(got)
        return [None if t is None else next(it) for t in ins]

    # ours, in the dtype
    args = leaves(x, residual, weight, bias)
    out = ours(kind, args[0], args[1], normalized_shape, args[2], args[3], eps, residual_in_fp32)
    our_grads = grads(out, args)
    # float64 reference
    ref_args = leaves(*[None if t is None else t.double() for t in (x, residual, weight, bias)])
    ref = torch_norm(kind, ref_args[0], ref_args[1], normalized_shape, ref_args[2], ref_args[3], eps, torch.float64)
    ref_grads = grads(ref, ref_args)
    # PyTorch in the dtype (parameters cast to it): its own error sets the scale
    base_args = leaves(x, residual, *[None if t is None else t.to(dtype) for t in (weight, bias)])
    base = torch_norm(kind, base_args[0], base_args[1], normalized_shape, base_args[2], base_args[3], eps, residual_dtype)
    base_grads = grads(base, base_args)

    names = ["y", "r'", "dx", "dresidual", "dweight", "dbias"]
    outs = [out[0], out[1], *our_grads]
    refs = [ref[0], ref[1] if is_add else None, *ref_grads]
    bases = [base[0], base[1] if is_add else None, *base_grads]
    for name, o, r, b in zip(names, outs, refs, bases):
        if r is None:
            assert o is None or not is_add, name
            continue
        assert o is not None, f"{name} missing"
        assert o.shape == r.shape, (name, o.shape, r.shape)
        if name in ("y", "dx"):
            assert o.dtype == dtype, (name, o.dtype)
        if name == "r'":
            assert o.dtype == residual_dtype
        bound = 2 * relative_error(b, r) + atol(dtype, x.device)
        err = relative_error(o, r)  # NaN (an element left unwritten) fails the comparison
        assert err <= bound, f"{kind} {name} {dtype} {tuple(x.shape)}: error {err:.3g} > bound {bound:.3g}"
    return out, our_grads
