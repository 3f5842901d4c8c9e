"""layernorm.layer_norm / rms_norm: parity with PyTorch, the float64 oracle,
every layout and dtype, the choice of implementation."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import layernorm
from layernorm import reference
from layernorm.functional import resolve_impl
from helpers import TOLERANCE, randn, random_like_activations, relative_error

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
IMPLS = ["torch", "reference"]
SHAPES = [((4, 1), (1,)), ((7, 33), (33,)), ((2, 3, 97), (97,)), ((4, 256), (256,)), ((3, 4, 24), (4, 24)), ((768,), (768,))]


def grads_of(fn, x, *params, dy):
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, *params)]
    y = fn(*leaves)
    y.backward(dy)
    return [y] + [t.grad if t is not None else None for t in leaves]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,ns", SHAPES)
def test_layer_norm_against_float64_reference_and_torch(impl, dtype, shape, ns):
    x = random_like_activations(*shape, dtype=dtype)
    w, b, dy = randn(*ns, dtype=dtype, seed=2), randn(*ns, dtype=dtype, seed=3), randn(*shape, dtype=dtype, seed=4)
    ours = grads_of(lambda x, w, b: layernorm.layer_norm(x, ns, w, b, impl=impl), x, w, b, dy=dy)
    theirs = grads_of(lambda x, w, b: F.layer_norm(x, ns, w, b), x, w, b, dy=dy)
    exact = grads_of(lambda x, w, b: reference.layer_norm(x, ns, w, b), x.double(), w.double(), b.double(), dy=dy.double())
    for got, torch_out, want in zip(ours, theirs, exact):
        assert got.dtype == torch_out.dtype and got.shape == torch_out.shape
        assert relative_error(got, want) <= TOLERANCE[dtype]
        # no worse than PyTorch's own error in this dtype, with a little slack
        assert relative_error(got, want) <= 2 * relative_error(torch_out, want) + 4 * torch.finfo(dtype).eps


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,ns", SHAPES)
def test_rms_norm_against_float64_reference_and_torch(impl, dtype, shape, ns):
    x = random_like_activations(*shape, dtype=dtype)
    w, dy = randn(*ns, dtype=dtype, seed=2), randn(*shape, dtype=dtype, seed=4)
    ours = grads_of(lambda x, w: layernorm.rms_norm(x, ns, w, impl=impl), x, w, dy=dy)
    theirs = grads_of(lambda x, w: F.rms_norm(x, ns, w), x, w, dy=dy)
    eps = torch.finfo(torch.promote_types(dtype, torch.float32)).eps  # eps=None: PyTorch's, float32's for half
    exact = grads_of(lambda x, w: reference.rms_norm(x, ns, w, eps), x.double(), w.double(), dy=dy.double())
    for got, torch_out, want in zip(ours, theirs, exact):
        assert got.dtype == torch_out.dtype
        assert relative_error(got, want) <= TOLERANCE[dtype]
        assert relative_error(got, want) <= 2 * relative_error(torch_out, want) + 4 * torch.finfo(dtype).eps


@settings(max_examples=60, deadline=None)
@given(
    leading=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    ns=st.lists(st.integers(1, 40), min_size=1, max_size=2),
    eps=st.floats(1e-8, 1e-2),
    offset=st.floats(-100, 100),
    scale=st.floats(0.01, 100),
    affine=st.booleans(),
    impl=st.sampled_from(IMPLS),
    seed=st.integers(0, 2**16),
)
def test_property_matches_float64_reference(leading, ns, eps, offset, scale, affine, impl, seed):
    shape = tuple(leading) + tuple(ns)
    x = (scale * randn(*shape, dtype=torch.float64, seed=seed) + offset).float()
    w = randn(*ns, seed=seed + 1) if affine else None
    b = randn(*ns, seed=seed + 2) if affine else None
    y = layernorm.layer_norm(x, ns, w, b, eps, impl=impl)
    want, _, _ = reference.layer_norm_forward(
        x.double(), ns, None if w is None else w.double(), None if b is None else b.double(), eps
    )
    assert y.shape == x.shape and y.dtype == torch.float32
    # float32 rounding of x itself limits the achievable error when |offset| >> scale
    tolerance = 1e-5 * (1 + abs(offset) / scale)
    assert relative_error(y, want) <= tolerance


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 6), n=st.integers(2, 64), shift=st.floats(-50, 50), stretch=st.floats(0.1, 10),
    seed=st.integers(0, 2**16),
)
def test_property_invariant_to_shift_and_scale_of_each_row(rows, n, shift, stretch, seed):
    """LN(a x + c) = LN(x) for a > 0 (up to eps): the statistics are the sample's own."""
    x = randn(rows, n, dtype=torch.float64, seed=seed)
    y = layernorm.layer_norm(x, n, eps=0.0, impl="reference")
    y_moved = layernorm.layer_norm(stretch * x + shift, n, eps=0.0, impl="reference")
    torch.testing.assert_close(y_moved, y, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(y.mean(-1), torch.zeros(rows, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(rows, dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_large_offset_through_layer_norm(impl):
    x = 1e4 + torch.randn(64, 1024, generator=torch.Generator().manual_seed(0))
    y = layernorm.layer_norm(x, (1024,), impl=impl)
    assert relative_error(y, F.layer_norm(x.double(), (1024,))) < 2e-3


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_input(impl):
    base = random_like_activations(48, 20)
    x = base.t()  # (20, 48), last dim strided
    assert not x.is_contiguous()
    w = randn(48, seed=2)
    got = grads_of(lambda x, w: layernorm.layer_norm(x, 48, w, impl=impl), x, w, dy=randn(20, 48, seed=3))
    want = grads_of(lambda x, w: F.layer_norm(x, (48,), w), x.contiguous(), w, dy=randn(20, 48, seed=3))
    for g, e in zip(got, want):
        assert relative_error(g, e) < 1e-6


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fn", ["layer_norm", "rms_norm"])
def test_empty_batch(impl, fn):
    x = torch.randn(0, 3, 16, requires_grad=True)
    w = torch.randn(16, requires_grad=True)
    y = getattr(layernorm, fn)(x, 16, w, impl=impl)
    assert y.shape == (0, 3, 16)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros(16))  # no rows: the sum over rows is zero


def test_mixed_precision_parameters_keep_input_dtype():
    x = random_like_activations(8, 64, dtype=torch.bfloat16)
    w, b = randn(64, seed=2), randn(64, seed=3)  # float32
    for impl in IMPLS:
        y = layernorm.layer_norm(x, 64, w, b, impl=impl)
        assert y.dtype == torch.bfloat16
        want = F.layer_norm(x.double(), (64,), w.double(), b.double())
        assert relative_error(y, want) < TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("fn", ["layer_norm", "add_layer_norm"])
def test_parameters_in_another_dtype_run_in_the_promoted_dtype(impl, fn):
    """float64 input, float32 parameters: float64 accuracy; float32 input, bfloat16 parameters:
    float32 output; gradients reach the parameters in their own dtype (PyTorch's CUDA op refuses
    these mixes, so ``impl="torch"`` promotes them itself)."""
    for x_dtype, p_dtype, tolerance in ((torch.float64, torch.float32, 1e-10), (torch.float32, torch.bfloat16, 1e-4)):
        x = random_like_activations(6, 40, dtype=x_dtype).requires_grad_()
        w = randn(40, seed=2, dtype=p_dtype).requires_grad_()
        b = randn(40, seed=3, dtype=p_dtype).requires_grad_()
        if fn == "layer_norm":
            y = layernorm.layer_norm(x, 40, w, b, impl=impl)
        else:
            y, _ = layernorm.add_layer_norm(x, None, 40, w, b, impl=impl)
        assert y.dtype == x_dtype
        want = F.layer_norm(x.double(), (40,), w.double(), b.double())
        assert relative_error(y, want) < tolerance
        y.backward(randn(6, 40, seed=4, dtype=x_dtype))
        assert (x.grad.dtype, w.grad.dtype, b.grad.dtype) == (x_dtype, p_dtype, p_dtype)
        assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_cpu_autocast_matches_torch_dtype():
    x = random_like_activations(4, 32, dtype=torch.bfloat16)
    w = randn(32, seed=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = layernorm.layer_norm(x, 32, w)
        theirs = F.layer_norm(x, (32,), w)
        ours32 = layernorm.layer_norm(x.float(), 32, w)
    assert ours.dtype == theirs.dtype == torch.bfloat16
    assert ours32.dtype == torch.float32


def test_rms_norm_default_eps_is_dtype_eps():
    x = torch.full((2, 4), 1e-4, dtype=torch.float32) * randn(2, 4, seed=5).sign()
    torch.testing.assert_close(layernorm.rms_norm(x, 4, impl="reference"), F.rms_norm(x, (4,)))


def test_resolve_impl_defaults_and_explicit_choice():
    x = torch.randn(2, 8)
    assert resolve_impl(x, None) == "torch"  # CPU, auto
    assert resolve_impl(x, "reference") == "reference"
    with pytest.raises(ValueError, match="impl='triton'"):
        layernorm.layer_norm(x.double(), 8, impl="triton")


def _run_python(code, **env):
    full_env = dict(os.environ, **env)
    full_env.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env)


def test_environment_variable_sets_the_process_default():
    code = (
        "import torch, layernorm; from layernorm.functional import resolve_impl;"
        "print(resolve_impl(torch.randn(2, 4), None))"
    )
    done = _run_python(code, LAYERNORM_IMPL="reference")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reference"
    bad = _run_python(code, LAYERNORM_IMPL="fastest")
    assert bad.returncode != 0 and "LAYERNORM_IMPL must be one of" in bad.stderr and "'fastest'" in bad.stderr
