"""LayerNorm / RMSNorm modules: PyTorch's signature, parameters, repr and state dicts."""

import inspect

import pytest
import torch

import layernorm
from helpers import random_like_activations, relative_error

PAIRS = [(layernorm.LayerNorm, torch.nn.LayerNorm), (layernorm.RMSNorm, torch.nn.RMSNorm)]
CONFIGS = [
    dict(normalized_shape=16),
    dict(normalized_shape=[4, 6], eps=1e-3),
    dict(normalized_shape=torch.Size([8]), elementwise_affine=False),
]
LN_ONLY_CONFIGS = [dict(normalized_shape=12, bias=False)]


@pytest.mark.parametrize("ours,theirs", PAIRS)
def test_same_constructor_signature(ours, theirs):
    assert inspect.signature(ours.__init__) == inspect.signature(theirs.__init__)
    assert issubclass(ours, theirs)


def _randomize(module):
    with torch.no_grad():
        for i, p in enumerate(module.parameters()):
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    return module


@pytest.mark.parametrize("ours,theirs", PAIRS)
@pytest.mark.parametrize("config", CONFIGS)
def test_state_dict_loads_both_ways_and_outputs_match(ours, theirs, config):
    torch_module = _randomize(theirs(**config))
    our_module = ours(**config)
    assert our_module.load_state_dict(torch_module.state_dict()) is not None
    assert list(our_module.state_dict()) == list(torch_module.state_dict())
    x = random_like_activations(3, *torch_module.normalized_shape)
    our_module.impl = "reference"  # compare the independent implementation, not torch with itself
    assert relative_error(our_module(x), torch_module(x)) < 1e-5

    back = theirs(**config)
    back.load_state_dict(_randomize(ours(**config)).state_dict())
    for p, q in zip(back.parameters(), ours(**config).parameters()):
        assert p.shape == q.shape


@pytest.mark.parametrize("config", LN_ONLY_CONFIGS + CONFIGS)
def test_layer_norm_module_mirrors_torch(config):
    ours, theirs = layernorm.LayerNorm(**config), torch.nn.LayerNorm(**config)
    assert repr(ours) == repr(theirs)
    assert ours.extra_repr() == theirs.extra_repr()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert (ours.bias is None) == (theirs.bias is None)
    if ours.weight is not None:
        with torch.no_grad():
            ours.weight.mul_(3)
        ours.reset_parameters()
        assert torch.equal(ours.weight, torch.ones_like(ours.weight))


def test_factory_kwargs():
    m = layernorm.LayerNorm(8, dtype=torch.float64, device="cpu")
    assert m.weight.dtype == torch.float64 and m.bias.dtype == torch.float64


def test_module_forward_with_impl_and_backward():
    m = _randomize(layernorm.LayerNorm(10))
    x = random_like_activations(5, 10).requires_grad_()
    for impl in ("torch", "reference"):
        m.impl = impl
        m.zero_grad()
        m(x).pow(2).sum().backward()
        assert m.weight.grad is not None and m.bias.grad is not None


def test_module_rejects_wrong_trailing_shape():
    with pytest.raises(ValueError, match=r"\[10\].*\[5, 9\]"):
        layernorm.LayerNorm(10)(torch.randn(5, 9))
