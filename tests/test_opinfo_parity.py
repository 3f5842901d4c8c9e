"""PyTorch's own OpInfo samples and error inputs of ``layer_norm``, ``native_layer_norm`` and
``rms_norm``, run through every implementation, with PyTorch's op as the oracle.

The samples are the ones PyTorch tests its own op with (``op_db`` in
``torch.testing._internal``): shapes down to a single element and an empty
batch, every combination of weight and bias, eps from the default to 0.5. For
each sample and implementation the output and the gradients of input, weight
and bias (for a random upstream gradient) are compared with PyTorch's: float64
and float32 to a tight tolerance, float16 and bfloat16 to a few roundings of
the dtype. Where we choose to differ, the test holds us to the choice:

- a negative eps (PyTorch computes with it; the square root of a negative
  variance is NaN for near-constant rows) is a ``ValueError`` that is also a
  ``RuntimeError``;
- complex input to ``rms_norm`` (PyTorch squares without conjugating, which is
  not a root mean square of magnitudes) is a ``TypeError`` that is also a
  ``RuntimeError``;
- the Triton kernels take float16, bfloat16 and float32; float64 asked of them
  is a ``ValueError`` that names the dtypes they take.

Every error input of PyTorch's raises here too, catchable as the type PyTorch
raises.
"""

import pytest
import torch

import layernorm
from helpers import randn, relative_error

pytest.importorskip("expecttest")  # torch.testing._internal needs it (the test extra installs it)
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

IMPLS = ["torch", "reference", "triton"]
OPS = {op.name: op for op in op_db if op.name in ("nn.functional.layer_norm", "native_layer_norm",
                                                  "nn.functional.rms_norm")}
FLOATS = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
COMPLEX = [torch.complex64, torch.complex128]
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# max |ours - PyTorch's| / max(max |PyTorch's|, 1), outputs and gradients alike. Both sides
# compute half-precision input in float32 and round once, but a gradient passes through more
# roundings (dy, the weight, the stored output) on its way: a few units of bfloat16's 2^-8.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def test_pytorch_defines_samples_for_the_three_ops():
    assert sorted(OPS) == ["native_layer_norm", "nn.functional.layer_norm", "nn.functional.rms_norm"]


def as_our_call(op_name, sample):
    """(our function's positional args, kwargs, PyTorch's output of interest) for an OpInfo sample.

    ``native_layer_norm(x, shape, weight, bias, eps)`` returns (y, mean, rstd): we compare y,
    through ``layernorm.layer_norm``, which takes the same arguments.
    """
    args, kwargs = list(sample.args), dict(sample.kwargs)
    if op_name == "native_layer_norm":
        shape, weight, bias, eps = args
        return layernorm.layer_norm, (shape, weight, bias, eps), {}
    function = layernorm.layer_norm if op_name == "nn.functional.layer_norm" else layernorm.rms_norm
    return function, tuple(args), kwargs


def pytorch_output(op_name, op, sample):
    out = op(sample.input, *sample.args, **sample.kwargs)
    return out[0] if op_name == "native_layer_norm" else out


def eps_of(function, args, kwargs):
    """The sample's eps, passed positionally or by name (None: the op's default)."""
    position = 3 if function is layernorm.layer_norm else 2
    return kwargs.get("eps", args[position] if len(args) > position else None)


def fresh_leaves(sample):
    """The sample's tensors (input first), detached copies that require grad, and a rebuild
    of its positional and keyword arguments around them."""
    def leaf(value):
        return value.detach().clone().requires_grad_() if isinstance(value, torch.Tensor) else value

    x = leaf(sample.input)
    args = [leaf(a) for a in sample.args]
    kwargs = {k: leaf(v) for k, v in sample.kwargs.items()}
    tensors = [x] + [a for a in args if isinstance(a, torch.Tensor)] + [
        v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    return x, args, kwargs, tensors


def output_and_grads(call, sample, seed, dy_dtype=None):
    """y = call(x, *args, **kwargs) and the gradients of every tensor argument for a random dy
    (its values rounded to ``dy_dtype``, the sample's dtype by default)."""
    x, args, kwargs, tensors = fresh_leaves(sample)
    y = call(x, *args, **kwargs)
    dy = randn(*y.shape, dtype=torch.float64, seed=seed).to(dy_dtype or y.dtype).to(y.dtype)
    grads = torch.autograd.grad(y, tensors, dy, allow_unused=True, materialize_grads=True)
    return [y.detach()] + list(grads)


def in_float64(sample):
    """The sample with every tensor cast to float64: the exact value, to our tolerances."""
    def cast(value):
        return value.detach().double() if isinstance(value, torch.Tensor) else value

    return type(sample)(cast(sample.input), args=tuple(cast(a) for a in sample.args),
                        kwargs={k: cast(v) for k, v in sample.kwargs.items()})


def samples(op_name, dtype):
    return list(OPS[op_name].sample_inputs("cpu", dtype, requires_grad=True))


def sample_ids(op_name, dtype):
    ids = []
    for s in samples(op_name, dtype):
        params = [a for a in s.args if isinstance(a, torch.Tensor)]
        nones = sum(a is None for a in s.args)
        ids.append(f"{list(s.input.shape)}/{len(params)}params/{nones}none/{s.kwargs}")
    return ids


def assert_refuses(call, sample, *error_types, naming):
    with pytest.raises(error_types) as raised:
        call(sample.input.detach(), *sample.args, **sample.kwargs)
    assert isinstance(raised.value, RuntimeError), "PyTorch raises RuntimeError: we must be catchable as it"
    assert naming in str(raised.value), f"the message should name {naming!r}: {raised.value}"


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("op_name", sorted(OPS))
def test_every_opinfo_sample_agrees_with_pytorch(op_name, dtype, impl):
    checked = 0
    for index, sample in enumerate(samples(op_name, dtype)):
        function, args, kwargs = as_our_call(op_name, sample)

        def ours(x, *args, **kwargs):
            return function(x, *args, impl=impl, **kwargs)

        def theirs(x, *args, **kwargs):
            return pytorch_output(op_name, OPS[op_name], type(sample)(x, args=tuple(args), kwargs=kwargs))

        our_sample = type(sample)(sample.input, args=args, kwargs=kwargs)
        eps = eps_of(function, args, kwargs)
        if eps is not None and eps < 0:
            assert_refuses(ours, our_sample, ValueError, naming="eps")
            continue
        if impl == "triton" and dtype not in KERNEL_DTYPES:
            assert_refuses(ours, our_sample, ValueError, naming="float32")
            checked += 1
            continue
        got = output_and_grads(ours, our_sample, seed=index)
        want = output_and_grads(theirs, sample, seed=index)
        assert len(got) == len(want)
        exact = output_and_grads(theirs, in_float64(sample), seed=index, dy_dtype=dtype)
        names = ["output"] + [f"gradient of tensor argument {i}" for i in range(len(got) - 1)]
        for i, (name, g, w) in enumerate(zip(names, got, want)):
            assert g.shape == w.shape and g.dtype == w.dtype, (name, g.shape, w.shape, g.dtype, w.dtype)
            if w.numel() == 0:
                continue
            assert not g.isnan().any(), f"{name}: NaN (an element not written?)"
            error = relative_error(g, w)
            if error > TOLERANCE[dtype]:
                # Allowed only where we are the closer of the two to the exact value (PyTorch's
                # op in float64): a one-element row, whose exact x_hat and dx are 0, where
                # PyTorch leaves a rounding residue times rstd = 1/sqrt(eps).
                ours_off, theirs_off = relative_error(g, exact[i]), relative_error(w, exact[i])
                assert ours_off <= theirs_off, (
                    f"sample {index} {list(sample.input.shape)}: {name} off PyTorch's by {error:.2e}, "
                    f"and further from float64 ({ours_off:.2e}) than PyTorch's ({theirs_off:.2e})")
        checked += 1
    assert checked >= 3, "most samples should be checked, not refused for their eps"


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
def test_complex_rms_norm_is_a_clear_type_error(dtype, impl):
    for sample in samples("nn.functional.rms_norm", dtype):
        function, args, kwargs = as_our_call("nn.functional.rms_norm", sample)
        assert_refuses(lambda x, *a, **k: function(x, *a, impl=impl, **k),
                       type(sample)(sample.input, args=args, kwargs=kwargs), TypeError, naming="floating-point")


def error_inputs():
    cases = []
    for op_name in ("native_layer_norm", "nn.functional.rms_norm"):
        for error in OPS[op_name].error_inputs("cpu"):
            cases.append(pytest.param(op_name, error, id=f"{op_name}: {error.error_regex[:40]}"))
    return cases


@pytest.mark.parametrize("impl", IMPLS, indirect=True)
@pytest.mark.parametrize("op_name,error", error_inputs())
def test_every_opinfo_error_input_raises_what_pytorch_raises(op_name, error, impl):
    sample = error.sample_input
    with pytest.raises(error.error_type, match=error.error_regex):  # PyTorch's own behaviour
        OPS[op_name](sample.input, *sample.args, **sample.kwargs)
    function, args, kwargs = as_our_call(op_name, sample)
    with pytest.raises(error.error_type) as raised:
        function(sample.input, *args, impl=impl, **kwargs)
    assert isinstance(raised.value, (ValueError, TypeError)), "the API edge raises ValueError / TypeError"
    assert "shape" in str(raised.value), f"the message should say which shape is wrong: {raised.value}"


def test_a_wrong_eps_would_be_caught():
    """The comparison above can fail: an eps our call ignored shows at float64 tolerance."""
    sample = samples("nn.functional.layer_norm", torch.float64)[0]
    assert sample.kwargs.get("eps") == 0.5
    function, args, kwargs = as_our_call("nn.functional.layer_norm", sample)
    got = output_and_grads(lambda x, *a, **k: function(x, *a, impl="reference", **{**k, "eps": 1e-5}),
                           sample, seed=0)
    want = output_and_grads(OPS["nn.functional.layer_norm"], sample, seed=0)
    assert relative_error(got[0], want[0]) > 100 * TOLERANCE[torch.float64]
