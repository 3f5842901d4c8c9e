"""The annotated reference: forward against PyTorch in float64, the explicit
backward against autograd and gradcheck, and the numerical-stability case."""

import pytest
import torch
import torch.nn.functional as F

from layernorm import reference
from helpers import randn, random_like_activations, relative_error

SHAPES = [((4, 1), (1,)), ((3, 17), (17,)), ((2, 3, 64), (64,)), ((5, 4, 6), (4, 6)), ((33,), (33,))]


def naive_layer_norm(x, ns, weight, bias, eps):
    """The forward written plainly in float64 autograd ops: an independent oracle."""
    dims = tuple(range(x.dim() - len(ns), x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


@pytest.mark.parametrize("shape,ns", SHAPES)
def test_forward_matches_torch_in_float64(shape, ns, device):
    x = random_like_activations(*shape, dtype=torch.float64, device=device)
    w, b = randn(*ns, dtype=torch.float64, seed=2, device=device), randn(*ns, dtype=torch.float64, seed=3, device=device)
    y, mean, rstd = reference.layer_norm_forward(x, ns, w, b, 1e-5)
    assert relative_error(y, F.layer_norm(x, ns, w, b, 1e-5)) < 1e-13
    dims = tuple(range(x.dim() - len(ns), x.dim()))
    assert mean.shape == x.shape[: x.dim() - len(ns)]
    torch.testing.assert_close(mean, x.mean(dims), rtol=1e-13, atol=1e-13)
    var = x.var(dims, unbiased=False)
    torch.testing.assert_close(rstd, 1 / torch.sqrt(var + 1e-5), rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape,ns", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
def test_explicit_backward_matches_autograd(shape, ns, affine, device):
    x = random_like_activations(*shape, dtype=torch.float64, device=device).requires_grad_()
    w = randn(*ns, dtype=torch.float64, seed=2, device=device).requires_grad_() if affine else None
    b = randn(*ns, dtype=torch.float64, seed=3, device=device).requires_grad_() if affine else None
    dy = randn(*shape, dtype=torch.float64, seed=4, device=device)
    y = naive_layer_norm(x, ns, w if affine else 1.0, b if affine else 0.0, 1e-5)
    y.backward(dy)
    _, mean, rstd = reference.layer_norm_forward(x.detach(), ns, w, b, 1e-5)
    dx, dw, db = reference.layer_norm_backward(dy, x.detach(), w, mean, rstd, with_bias=affine)
    assert relative_error(dx, x.grad) < 1e-12
    if affine:
        assert relative_error(dw, w.grad) < 1e-12
        assert relative_error(db, b.grad) < 1e-12
    else:
        assert dw is None and db is None


@pytest.mark.parametrize("shape,ns", [((3, 7), (7,)), ((2, 3, 4), (3, 4))])
def test_gradcheck_layer_norm(shape, ns):
    x = random_like_activations(*shape, dtype=torch.float64).requires_grad_()
    w = randn(*ns, dtype=torch.float64, seed=2).requires_grad_()
    b = randn(*ns, dtype=torch.float64, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w, b: reference.layer_norm(x, ns, w, b, 1e-5), (x, w, b))


@pytest.mark.parametrize("shape,ns", [((3, 7), (7,)), ((2, 3, 4), (3, 4))])
def test_gradcheck_rms_norm(shape, ns):
    x = random_like_activations(*shape, dtype=torch.float64).requires_grad_()
    w = randn(*ns, dtype=torch.float64, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, w: reference.rms_norm(x, ns, w, 1e-6), (x, w))


@pytest.mark.parametrize("shape,ns", SHAPES)
def test_rms_norm_matches_torch_and_autograd(shape, ns):
    x = random_like_activations(*shape, dtype=torch.float64).requires_grad_()
    w = randn(*ns, dtype=torch.float64, seed=2).requires_grad_()
    dy = randn(*shape, dtype=torch.float64, seed=4)
    expected = F.rms_norm(x, ns, w, 1e-6)
    expected.backward(dy)
    y, rstd = reference.rms_norm_forward(x.detach(), ns, w.detach(), 1e-6)
    dx, dw = reference.rms_norm_backward(dy, x.detach(), w.detach(), rstd)
    assert relative_error(y, expected) < 1e-13
    # At N = 1, dx = r g (1 - x_hat^2) with x_hat^2 = 1 - O(eps): both formulas
    # cancel catastrophically even in float64, so the bound is looser there.
    assert relative_error(dx, x.grad) < (1e-8 if ns == (1,) else 1e-12)
    assert relative_error(dw, w.grad) < 1e-12


def test_large_offset_is_stable_in_float32():
    """x = 1e4 + N(0, 1): E[x^2] - E[x]^2 returns NaN here; the reference stays within 2e-3."""
    x = 1e4 + torch.randn(64, 1024, generator=torch.Generator().manual_seed(0))
    exact = F.layer_norm(x.double(), (1024,))
    y, _, _ = reference.layer_norm_forward(x, (1024,))
    assert y.dtype == torch.float32
    assert relative_error(y, exact) < 2e-3
    # The shortcut this module avoids really does fail on this input.
    naive_var = (x * x).mean(-1, keepdim=True) - x.mean(-1, keepdim=True) ** 2
    naive = (x - x.mean(-1, keepdim=True)) / torch.sqrt(naive_var + 1e-5)
    assert not relative_error(naive, exact) < 2e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_float32(dtype):
    x = random_like_activations(8, 96, dtype=dtype)
    y, mean, rstd = reference.layer_norm_forward(x, (96,))
    assert y.dtype == dtype and mean.dtype == torch.float32 and rstd.dtype == torch.float32
    exact = F.layer_norm(x.double(), (96,))
    assert relative_error(y, exact) < 2 * torch.finfo(dtype).eps * 4
