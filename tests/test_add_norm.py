"""Residual add + norm: both outputs and all four gradients against float64."""

import pytest
import torch
import torch.nn.functional as F

import layernorm
from helpers import TOLERANCE, randn, random_like_activations, relative_error

IMPLS = ["torch", "reference"]


def run_add_norm(fn, x, residual, w, b, dy, dres, **kwargs):
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, residual, w, b)]
    x_, r_, w_, b_ = leaves
    if fn is layernorm.add_layer_norm:
        y, new_residual = fn(x_, r_, x.shape[-1], w_, b_, 1e-5, **kwargs)
    else:
        y, new_residual = fn(x_, r_, x.shape[-1], w_, 1e-5, **kwargs)
    torch.autograd.backward([y, new_residual], [dy.to(y.dtype), dres.to(new_residual.dtype)])
    return [y, new_residual] + [t.grad if t is not None else None for t in leaves]


def exact(fn, x, residual, w, b, dy, dres):
    h = x.double().requires_grad_()
    r = residual.double().requires_grad_() if residual is not None else None
    wd, bd = w.double().requires_grad_(), b.double().requires_grad_()
    s = h + r if r is not None else h
    y = F.layer_norm(s, (x.shape[-1],), wd, bd, 1e-5) if fn is layernorm.add_layer_norm else F.rms_norm(s, (x.shape[-1],), wd, 1e-5)
    torch.autograd.backward([y, s], [dy.double(), dres.double()])
    grads = [h.grad, r.grad if r is not None else None, wd.grad, bd.grad if fn is layernorm.add_layer_norm else None]
    return [y, s] + grads


@pytest.mark.parametrize("fn", [layernorm.add_layer_norm, layernorm.add_rms_norm])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_residual", [True, False])
def test_add_norm_against_float64(fn, impl, dtype, with_residual, device):
    x = random_like_activations(3, 5, 48, dtype=dtype, device=device)
    residual = randn(3, 5, 48, dtype=dtype, seed=7, device=device) if with_residual else None
    w, b = randn(48, dtype=dtype, seed=2, device=device), randn(48, dtype=dtype, seed=3, device=device)
    dy, dres = randn(3, 5, 48, dtype=dtype, seed=4, device=device), randn(3, 5, 48, dtype=dtype, seed=5, device=device)
    got = run_add_norm(fn, x, residual, w, b, dy, dres, impl=impl)
    want = exact(fn, x, residual, w, b, dy, dres)
    assert got[0].dtype == dtype and got[1].dtype == dtype
    for g, e in zip(got, want):
        if e is None:
            continue
        assert relative_error(g, e) <= TOLERANCE[dtype]


def test_residual_in_fp32_keeps_the_stream_in_float32():
    x = random_like_activations(4, 32, dtype=torch.bfloat16)
    residual = randn(4, 32, dtype=torch.float32, seed=7)
    y, new_residual = layernorm.add_layer_norm(x, residual, 32, residual_in_fp32=True)
    assert y.dtype == torch.bfloat16 and new_residual.dtype == torch.float32
    torch.testing.assert_close(new_residual, x.float() + residual)


def test_add_layer_norm_module_loads_a_layer_norm_checkpoint():
    source = torch.nn.LayerNorm(16)
    with torch.no_grad():
        source.weight.normal_()
        source.bias.normal_()
    fused = layernorm.AddLayerNorm(16)
    fused.load_state_dict(source.state_dict())
    x, h = random_like_activations(2, 16), randn(2, 16, seed=9)
    y, new_h = fused(x, h)
    assert relative_error(y, source(x + h)) < 1e-6
    assert torch.equal(new_h, x + h)
    y_rms, _ = layernorm.AddRMSNorm(16)(x, h)
    assert relative_error(y_rms, F.rms_norm(x + h, (16,))) < 1e-6


def test_bad_residual():
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match=r"residual must have the input's shape \[2, 8\], got \[2, 7\]"):
        layernorm.add_layer_norm(x, torch.randn(2, 7), 8)
    with pytest.raises(TypeError, match="residual must be a floating-point"):
        layernorm.add_rms_norm(x, torch.ones(2, 8, dtype=torch.long), 8)
