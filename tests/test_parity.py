"""Drop-in parity with PyTorch, PyTorch's own op the oracle: rms_norm's default eps on
half-precision input, second derivatives through the reference, the names ``impl=`` and
``LAYERNORM_IMPL`` take, and the exceptions bad input raises."""

import importlib.util
import warnings

import pytest
import torch
import torch.nn.functional as F

import layernorm
from layernorm import functional
from layernorm.validation import check_impl
from helpers import llama_rms_norm, randn, relative_error

HALF = [torch.float16, torch.bfloat16]
IMPLS = ["torch", "reference", "triton"]
IMPL_NAMES = ["auto"] + IMPLS  # what impl= and LAYERNORM_IMPL take, as documented


def small_activations(*shape, dtype, seed=0):
    """|x| ~ 0.05: a mean square of 2.5e-3, which bfloat16's eps (2**-7) would swamp."""
    return (0.05 * randn(*shape, dtype=torch.float64, seed=seed)).to(dtype)


def outputs_and_grads(fn, *tensors, dy):
    leaves = [t.clone().requires_grad_() for t in tensors]
    y = fn(*leaves)
    y.backward(dy)
    return [y] + [t.grad for t in leaves]


def assert_within_roundoff(ours, theirs, dtype):
    """Both compute in float32 and round once to ``dtype``: a few units of its roundoff apart."""
    for got, want in zip(ours, theirs):
        assert got.dtype == want.dtype
        assert relative_error(got, want) <= 4 * torch.finfo(dtype).eps


# --- 1. rms_norm's eps=None on half-precision input ------------------------------------------


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@pytest.mark.parametrize("dtype", HALF)
def test_rms_norm_default_eps_on_half_input_is_pytorchs(impl, dtype):
    x = small_activations(6, 64, dtype=dtype)
    w, dy = randn(64, dtype=dtype, seed=2), randn(6, 64, dtype=dtype, seed=3)
    ours = outputs_and_grads(lambda x, w: layernorm.rms_norm(x, (64,), w, impl=impl), x, w, dy=dy)
    theirs = outputs_and_grads(lambda x, w: F.rms_norm(x, (64,), w), x, w, dy=dy)
    assert_within_roundoff(ours, theirs, dtype)


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@pytest.mark.parametrize("dtype", HALF)
def test_rms_norm_module_default_eps_on_half_input_is_pytorchs(impl, dtype):
    theirs = torch.nn.RMSNorm(64, dtype=dtype)
    with torch.no_grad():
        theirs.weight.copy_(randn(64, dtype=dtype, seed=2))
    ours = layernorm.RMSNorm(64, dtype=dtype)
    ours.load_state_dict(theirs.state_dict())
    ours.impl = impl
    assert ours.eps is None and theirs.eps is None
    x = small_activations(4, 5, 64, dtype=dtype)
    assert_within_roundoff([ours(x)], [theirs(x)], dtype)


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@pytest.mark.parametrize("dtype", HALF)
def test_add_rms_norm_default_eps_on_half_input_is_pytorchs(impl, dtype):
    x, residual = small_activations(6, 64, dtype=dtype), small_activations(6, 64, dtype=dtype, seed=1)
    w = randn(64, dtype=dtype, seed=2)
    y, new_residual = layernorm.add_rms_norm(x, residual, (64,), w, impl=impl)
    assert_within_roundoff([y], [F.rms_norm(new_residual, (64,), w)], dtype)


# --- 2. second derivatives through the reference ----------------------------------------------

SHAPES = [((3, 7), (7,)), ((2, 3, 4), (3, 4))]
LAYER_NORM_PARAMS = {"weight and bias": (True, True), "weight": (True, False), "bias": (False, True),
                     "neither": (False, False)}


def float64_inputs(shape, ns, with_weight, with_bias):
    """x (offset mean, non-unit scale) and the parameters asked for, as float64 leaves."""
    x = 0.5 * randn(*shape, dtype=torch.float64, seed=1) - 2.3
    w = [randn(*ns, dtype=torch.float64, seed=2)] if with_weight else []
    b = [randn(*ns, dtype=torch.float64, seed=3)] if with_bias else []
    return [t.requires_grad_() for t in [x] + w + b]


def layer_norm_of(fn, ns, with_weight, with_bias):
    """``fn(x, ns, weight, bias, eps)`` as a function of the leaves float64_inputs returns."""
    def norm(x, *params):
        params = list(params)
        weight = params.pop(0) if with_weight else None
        bias = params.pop(0) if with_bias else None
        return fn(x, ns, weight, bias, 1e-5)
    return norm


def rms_norm_of(fn, ns):
    def norm(x, weight=None):
        return fn(x, ns, weight, 1e-6)
    return norm


def reference_layer_norm(*args):
    return layernorm.layer_norm(*args, impl="reference")


def reference_rms_norm(*args):
    return layernorm.rms_norm(*args, impl="reference")


def pytorch_layer_norm(x, ns, weight, bias, eps):
    # PyTorch's own double backward fails for a bias without a weight (torch 2.13: "Expected a
    # proper Tensor but got None"); a weight of ones is the same function.
    if weight is None and bias is not None:
        weight = torch.ones(ns, dtype=x.dtype)
    return F.layer_norm(x, ns, weight, bias, eps)


def second_derivatives(norm, inputs):
    """The gradient, with respect to every input, of <first gradients, v> for a random v."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    y = norm(*leaves)
    firsts = torch.autograd.grad(y, leaves, randn(*y.shape, dtype=y.dtype, seed=4), create_graph=True)
    inner = sum((g * randn(*g.shape, dtype=g.dtype, seed=5 + i)).sum() for i, g in enumerate(firsts))
    return torch.autograd.grad(inner, leaves, materialize_grads=True)


@pytest.mark.parametrize("params", LAYER_NORM_PARAMS)
@pytest.mark.parametrize("shape,ns", SHAPES)
def test_reference_layer_norm_second_derivatives(shape, ns, params):
    inputs = float64_inputs(shape, ns, *LAYER_NORM_PARAMS[params])
    ours = layer_norm_of(reference_layer_norm, ns, *LAYER_NORM_PARAMS[params])
    theirs = layer_norm_of(pytorch_layer_norm, ns, *LAYER_NORM_PARAMS[params])
    assert torch.autograd.gradcheck(ours, inputs)
    assert torch.autograd.gradgradcheck(ours, inputs)
    for got, want in zip(second_derivatives(ours, inputs), second_derivatives(theirs, inputs)):
        assert relative_error(got, want) < 1e-12


@pytest.mark.parametrize("with_weight", [True, False], ids=["weight", "no weight"])
@pytest.mark.parametrize("shape,ns", SHAPES)
def test_reference_rms_norm_second_derivatives(shape, ns, with_weight):
    inputs = float64_inputs(shape, ns, with_weight, with_bias=False)
    ours, theirs = rms_norm_of(reference_rms_norm, ns), rms_norm_of(F.rms_norm, ns)
    assert torch.autograd.gradcheck(ours, inputs)
    assert torch.autograd.gradgradcheck(ours, inputs)
    for got, want in zip(second_derivatives(ours, inputs), second_derivatives(theirs, inputs)):
        assert relative_error(got, want) < 1e-12


# --- 3. the names impl= and LAYERNORM_IMPL take -----------------------------------------------


@pytest.mark.parametrize("spelling,meaning", [
    ("torch", "torch"), ("TORCH", "torch"), ("Reference", "reference"), (" reference ", "reference"),
    ("auto", None), ("AUTO", None),
])
def test_impl_argument_and_environment_variable_take_the_same_names(monkeypatch, spelling, meaning):
    monkeypatch.setenv("LAYERNORM_IMPL", spelling)
    assert functional._process_default() == meaning
    assert check_impl(spelling) == meaning
    x = randn(3, 8, seed=1).requires_grad_()
    spelled = layernorm.layer_norm(x, 8, impl=spelling)
    canonical = layernorm.layer_norm(x, 8, impl=meaning)
    assert type(spelled.grad_fn) is type(canonical.grad_fn)  # the same implementation ran
    assert torch.equal(spelled, canonical)


@pytest.mark.parametrize("value", ["nonsense", "cuda", "torch.nn"])
def test_bad_environment_variable_names_itself_what_it_takes_and_what_came(monkeypatch, value):
    monkeypatch.setenv("LAYERNORM_IMPL", value)
    with pytest.raises(ValueError) as raised:
        functional._process_default()
    message = str(raised.value)
    assert "LAYERNORM_IMPL" in message and repr(value) in message
    assert all(repr(name) in message for name in IMPL_NAMES)


def test_bad_impl_argument_names_what_it_takes_and_what_came():
    with pytest.raises(ValueError) as raised:
        layernorm.layer_norm(randn(2, 8), 8, impl="fastest")
    message = str(raised.value)
    assert message.startswith("impl must be one of") and "'fastest'" in message
    assert all(repr(name) in message for name in IMPL_NAMES)


# --- 4. bad input: catchable as PyTorch's exception and as ours --------------------------------

X = randn(4, 8, seed=1)

# (what is wrong, the call given layer_norm or rms_norm, the class we document, the message)
BAD_CALLS = [
    ("trailing dims differ", lambda f: f(X, (7,)), ValueError, r"normalized_shape \[7\].*input of shape \[4, 8\]"),
    ("more normalized dims than the input has", lambda f: f(randn(8), (2, 8)), ValueError,
     r"normalized_shape \[2, 8\].*input of shape \[8\]"),
    ("empty normalized_shape", lambda f: f(X, ()), ValueError, r"at least one dimension, got \(\)"),
    ("zero in normalized_shape, not the input's", lambda f: f(X, (0,)), ValueError,
     r"normalized_shape \[0\].*input of shape \[4, 8\]"),
    ("negative normalized_shape", lambda f: f(X, (-8,)), ValueError, r"sizes >= 0, got \(-8,\)"),
    ("float in normalized_shape", lambda f: f(X, (8.0,)), TypeError, r"only ints, got \(8.0,\)"),
    ("integer input", lambda f: f(torch.arange(8).reshape(1, 8), (8,)), TypeError, "floating-point.*torch.int64"),
    ("input not a tensor", lambda f: f([[1.0, 2.0]], (2,)), TypeError, "torch.Tensor, got list"),
    ("weight of the wrong shape", lambda f: f(X, (8,), torch.ones(7)), ValueError,
     r"weight must have shape normalized_shape \[8\], got \[7\]"),
    ("integer weight", lambda f: f(X, (8,), torch.ones(8, dtype=torch.int32)), TypeError,
     "weight must be a floating-point tensor, got dtype torch.int32"),
    ("weight not a tensor", lambda f: f(X, (8,), 1.0), TypeError, "weight must be a torch.Tensor or None, got float"),
    ("weight on another device", lambda f: f(X, (8,), torch.ones(8, device="meta")), ValueError,
     "weight is on meta but the input is on cpu"),
    ("eps not a number", lambda f: f(X, (8,), eps="1e-5"), TypeError, "eps must be a real number, got str"),
    ("negative eps", lambda f: f(X, (8,), eps=-0.1), ValueError, "eps must be >= 0, got -0.1"),
]


def pytorchs_exception(call, op):
    try:
        with warnings.catch_warnings():  # rms_norm warns as it takes an integer weight
            warnings.simplefilter("ignore")
            call(getattr(F, op))
    except Exception as error:  # noqa: BLE001 - whatever PyTorch raises is the oracle
        return error
    return None  # PyTorch takes it (a negative eps, rms_norm's integer weight): ours refuses


def assert_catchable_as_pytorchs_and_ours(call, pytorchs, documented, message):
    with pytest.raises(RuntimeError):
        call()
    with pytest.raises(documented, match=message):
        call()
    with pytest.raises(Exception) as raised:
        call()
    if pytorchs is not None:  # whichever of these PyTorch's is, ours is too
        for kind in (RuntimeError, ValueError, TypeError):
            assert isinstance(raised.value, kind) or not isinstance(pytorchs, kind), (kind, pytorchs)


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("what,call,documented,message", BAD_CALLS, ids=[case[0] for case in BAD_CALLS])
def test_bad_input_raises_what_pytorch_raises_and_what_we_document(op, what, call, documented, message):
    pytorchs = pytorchs_exception(call, op)
    assert_catchable_as_pytorchs_and_ours(lambda: call(getattr(layernorm, op)), pytorchs, documented, message)


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("shape,ns", [((8, 0), (0,)), ((2, 0, 3), (0, 3)), ((3, 4, 0), (4, 0)), ((0, 5), (5,))])
def test_empty_rows_or_normalized_dims_behave_as_pytorchs(impl, op, shape, ns):
    """PyTorch takes a normalized_shape with a 0 in it (each row is empty) and rows of 0; so do we,
    with the same shapes out and back, and parameter gradients that are sums over no rows."""
    x, w, dy = randn(*shape, seed=4), randn(*ns, seed=5), randn(*shape, seed=6)
    call = (lambda f, **kw: lambda x, w: f(x, ns, w, **kw))
    ours = outputs_and_grads(call(getattr(layernorm, op), impl=impl), x, w, dy=dy)
    theirs = outputs_and_grads(call(getattr(F, op)), x, w, dy=dy)
    for got, want in zip(ours, theirs):
        assert got.shape == want.shape and got.dtype == want.dtype
        assert torch.equal(got, want)  # empty, or the zeros of a sum over no rows


@pytest.mark.parametrize("what,bias,documented,message", [
    ("bias of the wrong shape", torch.zeros(2, 4), ValueError, r"bias must have shape normalized_shape \[8\], got \[2, 4\]"),
    ("bias not a tensor", 0.0, TypeError, "bias must be a torch.Tensor or None, got float"),
    ("integer bias", torch.zeros(8, dtype=torch.int64), TypeError, "bias must be a floating-point tensor"),
])
def test_bad_bias_raises_what_pytorch_raises_and_what_we_document(what, bias, documented, message):
    def call(f):
        return f(X, (8,), torch.ones(8), bias)

    pytorchs = pytorchs_exception(call, "layer_norm")
    assert_catchable_as_pytorchs_and_ours(lambda: call(layernorm.layer_norm), pytorchs, documented, message)


@pytest.mark.parametrize("ours,theirs", [(layernorm.LayerNorm, torch.nn.LayerNorm), (layernorm.RMSNorm, torch.nn.RMSNorm)])
def test_modules_raise_what_pytorchs_raise(ours, theirs):
    x = randn(5, 9)
    with pytest.raises(RuntimeError):
        theirs(10)(x)
    assert_catchable_as_pytorchs_and_ours(lambda: ours(10)(x), None, ValueError, r"\[10\].*\[5, 9\]")


def test_residual_of_the_wrong_shape_raises_as_adding_it_would():
    with pytest.raises(RuntimeError):
        X + randn(4, 7)
    assert_catchable_as_pytorchs_and_ours(
        lambda: layernorm.add_layer_norm(X, randn(4, 7), 8), None, ValueError,
        r"residual must have the input's shape \[4, 8\], got \[4, 7\]")


@pytest.mark.parametrize("impl,documented", [("fastest", ValueError), (3, TypeError)])
def test_bad_impl_is_catchable_as_runtime_error_too(impl, documented):
    assert_catchable_as_pytorchs_and_ours(lambda: layernorm.layer_norm(X, 8, impl=impl), None, documented, "impl must be")


def test_triton_on_an_input_it_does_not_take_is_catchable_as_runtime_error_too():
    assert_catchable_as_pytorchs_and_ours(
        lambda: layernorm.layer_norm(X.double(), 8, impl="triton"), None, ValueError, "impl='triton' needs")


# --- TorchScript -------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["LayerNorm", "RMSNorm"])
def test_models_holding_our_modules_script_and_trace(norm, monkeypatch):
    """torch.jit.script compiles PyTorch's op in our modules' place; torch.jit.trace records it,
    whatever implementation the module asks for (the kernels cannot be recorded)."""
    import layernorm

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), getattr(layernorm, norm)(8))
    with torch.no_grad():
        model[1].weight.normal_()
    x = torch.randn(3, 8)
    expected = model(x)
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x), expected)
    for impl in ("reference", "triton", None):
        if impl == "triton" and importlib.util.find_spec("triton") is None:
            continue
        model[1].impl = impl
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x + 1), model(x + 1))
        assert "PythonOp" not in str(traced.inlined_graph)  # PyTorch ops only: it replays without Python


# --- torch.func on the reference ---------------------------------------------------------------


@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_reference_under_torch_func_matches_torch(op):
    from torch.func import grad, jvp, vmap

    g = torch.Generator().manual_seed(0)
    x, tx = torch.randn(3, 5, 8, generator=g, dtype=torch.float64), torch.randn(3, 5, 8, generator=g,
                                                                               dtype=torch.float64)
    w = torch.randn(8, generator=g, dtype=torch.float64) + 1

    def ours(x, w):
        return getattr(layernorm, op)(x, (8,), w, impl="reference")

    def torchs(x, w):
        return getattr(F, op)(x, (8,), w)

    torch.testing.assert_close(vmap(ours, (1, None))(x, w), vmap(torchs, (1, None))(x, w))
    torch.testing.assert_close(jvp(lambda x: ours(x, w), (x,), (tx,)), jvp(lambda x: torchs(x, w), (x,), (tx,)))
    torch.testing.assert_close(grad(lambda x, w: ours(x, w).pow(2).sum(), argnums=(0, 1))(x, w),
                               grad(lambda x, w: torchs(x, w).pow(2).sum(), argnums=(0, 1))(x, w))


# --- the offset gain (Gemma's 1 + weight) -------------------------------------------------------


@pytest.mark.parametrize("impl", ["torch", "reference"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_rms_norm_weight_offset_is_one_plus_weight(impl, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, generator=g, dtype=torch.float64)
    w = 0.1 * torch.randn(16, generator=g, dtype=torch.float64)
    r = torch.randn(4, 3, 16, generator=g, dtype=torch.float64)
    xs, ws = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
    y = layernorm.rms_norm(xs, 16, ws, 1e-6, impl=impl, weight_offset=1.0)
    y.backward(torch.ones_like(y))
    x64, w64 = x.to(dtype).double().requires_grad_(), w.to(dtype).double().requires_grad_()
    expected = F.rms_norm(x64, (16,), 1.0 + w64, 1e-6)
    expected.backward(torch.ones_like(expected))
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), expected.detach(), atol=tol, rtol=tol)
    torch.testing.assert_close(ws.grad.double(), w64.grad, atol=8 * tol, rtol=tol)
    y2, s = layernorm.add_rms_norm(x.to(dtype), r.to(dtype), 16, w.to(dtype), 1e-6, impl=impl, weight_offset=1.0)
    torch.testing.assert_close(y2.double(), F.rms_norm(s.double(), (16,), 1.0 + w.to(dtype).double(), 1e-6),
                               atol=tol, rtol=tol)


@pytest.mark.parametrize("offset,error", [("1", TypeError), (True, TypeError), (float("nan"), ValueError)])
def test_weight_offset_is_checked(offset, error):
    with pytest.raises(error, match="weight_offset"):
        layernorm.rms_norm(torch.randn(2, 4), 4, torch.randn(4), weight_offset=offset)


# --- Llama's rounding order: x_hat rounded to the input's dtype, then the weight --------------------


@pytest.mark.parametrize("impl", ["torch", "reference"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_round_before_weight_rounds_where_llama_does(impl, dtype, offset):
    """Element by element against Llama's expression; the triton path: tests/test_kernels.py."""
    x, r = randn(64, 48, dtype=dtype, seed=1), randn(64, 48, dtype=dtype, seed=2)
    w = (1.0 + 0.3 * randn(48, seed=3)).to(dtype)
    ours = layernorm.rms_norm(x, 48, w, 1e-6, impl=impl, weight_offset=offset, round_before_weight=True)
    theirs = llama_rms_norm(x, w, 1e-6, offset).to(dtype)
    differ = (ours != theirs).float().mean().item()
    assert differ <= 0.02, f"{differ:.1%} of elements differ"  # float32's last bit may tip a rounding
    once = layernorm.rms_norm(x, 48, w, 1e-6, impl=impl, weight_offset=offset)
    assert (once != theirs).float().mean().item() > 4 * differ  # the orders differ, and we can tell
    y, s = layernorm.add_rms_norm(x, r, 48, w, 1e-6, impl=impl, weight_offset=offset, round_before_weight=True)
    assert (y != llama_rms_norm(s, w, 1e-6, offset).to(dtype)).float().mean().item() <= 0.02


@pytest.mark.parametrize("impl", ["torch", "reference"])
def test_round_before_weight_keeps_gradients(impl):
    """The rounding's derivative is taken as 1: the same gradients as without it, in float32."""
    x, w = randn(6, 32, seed=1).requires_grad_(), (1.0 + randn(32, seed=2)).requires_grad_()
    dy = randn(6, 32, seed=3)
    with_rounding = torch.autograd.grad(layernorm.rms_norm(x, 32, w, impl=impl, round_before_weight=True), (x, w), dy)
    without = torch.autograd.grad(layernorm.rms_norm(x, 32, w, impl=impl), (x, w), dy)
    for got, want in zip(with_rounding, without):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_round_before_weight_is_checked(value):
    with pytest.raises(TypeError, match="round_before_weight"):
        layernorm.rms_norm(torch.randn(2, 4), 4, torch.randn(4), round_before_weight=value)


@pytest.mark.parametrize("impl", ["torch", "reference"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_layer_norm_weight_offset_is_one_plus_weight(impl, dtype):
    x, r = randn(4, 3, 16, dtype=torch.float64, seed=1), randn(4, 3, 16, dtype=torch.float64, seed=2)
    w, b = 0.1 * randn(16, dtype=torch.float64, seed=3), randn(16, dtype=torch.float64, seed=4)
    xs, ws, bs = (t.to(dtype).requires_grad_() for t in (x, w, b))
    y = layernorm.layer_norm(xs, 16, ws, bs, 1e-5, impl=impl, weight_offset=1.0)
    y.backward(torch.ones_like(y))
    x64, w64, b64 = (t.to(dtype).double().requires_grad_() for t in (x, w, b))
    expected = F.layer_norm(x64, (16,), 1.0 + w64, b64, 1e-5)
    expected.backward(torch.ones_like(expected))
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    assert y.dtype == dtype and ws.grad.dtype == dtype
    torch.testing.assert_close(y.double(), expected.detach(), atol=tol, rtol=tol)
    torch.testing.assert_close(xs.grad.double(), x64.grad, atol=tol, rtol=tol)
    torch.testing.assert_close(ws.grad.double(), w64.grad, atol=8 * tol, rtol=tol)
    y2, s = layernorm.add_layer_norm(x.to(dtype), r.to(dtype), 16, w.to(dtype), b.to(dtype), 1e-5, impl=impl,
                                     weight_offset=1.0)
    torch.testing.assert_close(y2.double(), F.layer_norm(s.double(), (16,), 1.0 + w.to(dtype).double(),
                                                         b.to(dtype).double(), 1e-5), atol=tol, rtol=tol)
