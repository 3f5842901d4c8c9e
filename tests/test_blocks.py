"""layernorm.blocks and patch(fuse_add=True): PyTorch's transformer layers, adds fused into norms.

Each patched layer must compute what PyTorch's computes: the output and every
gradient (input, memory, every parameter), in float64, against an unpatched
copy with the same parameters, in both arrangements (post-norm and pre-norm),
with masks, and through each implementation of the fused call.
"""

import copy

import pytest
import torch

import layernorm
from layernorm import blocks

D_MODEL, HEADS, FF = 16, 2, 24


def make_layer(kind: str, norm_first: bool, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = torch.nn.TransformerEncoderLayer if kind == "encoder" else torch.nn.TransformerDecoderLayer
    layer = cls(D_MODEL, HEADS, FF, dropout=0.0, batch_first=True, norm_first=norm_first, dtype=torch.float64)
    with torch.no_grad():  # gains and biases away from 1 and 0, so a misplaced norm shows
        for module in layer.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
    return layer


def inputs(kind: str, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(3, 5, D_MODEL, generator=g, dtype=torch.float64) * 0.7 + 0.4).requires_grad_()
    memory = torch.randn(3, 4, D_MODEL, generator=g, dtype=torch.float64).requires_grad_()
    return (x,) if kind == "encoder" else (x, memory)


def masks(kind: str):
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)  # True: may not attend
    padding = torch.tensor([[False] * 5, [False] * 4 + [True], [False] * 3 + [True] * 2])
    if kind == "encoder":
        return dict(src_mask=causal, src_key_padding_mask=padding)
    return dict(tgt_mask=causal, tgt_key_padding_mask=padding)


def outputs_and_grads(layer, xs, kw):
    xs = [t.detach().clone().requires_grad_() for t in xs]
    out = layer(*xs, **kw)
    dy = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    grads = torch.autograd.grad(out, xs + [p for p in layer.parameters()], dy)
    return out.detach(), grads


@pytest.mark.parametrize("impl", [None, "reference", "torch"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post-norm", "pre-norm"])
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_patched_layer_matches_pytorch(kind, norm_first, impl):
    theirs = make_layer(kind, norm_first)
    ours = copy.deepcopy(theirs)
    norms = 2 if kind == "encoder" else 3
    assert layernorm.patch(ours, fuse_add=True) == 1 + norms
    assert type(ours).__module__ == "layernorm.blocks"
    for module in ours.modules():
        if isinstance(module, layernorm.LayerNorm):
            module.impl = impl
    xs, kw = inputs(kind), masks(kind)
    want, want_grads = outputs_and_grads(theirs, xs, kw)
    got, got_grads = outputs_and_grads(ours, xs, kw)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert len(got_grads) == len(want_grads)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_fused_call_is_the_one_that_runs(monkeypatch):
    """The patched forward goes through add_layer_norm, once per fused add."""
    calls = []
    real = blocks.add_layer_norm
    monkeypatch.setattr(blocks, "add_layer_norm", lambda *a, **k: calls.append(1) or real(*a, **k))
    for norm_first, fused in ((False, 2), (True, 1)):
        layer = make_layer("encoder", norm_first)
        layernorm.patch(layer, fuse_add=True)
        calls.clear()
        layer(*inputs("encoder"))
        assert len(calls) == fused


def test_pure_inference_goes_to_pytorchs_forward():
    """eval + no_grad: PyTorch's forward (its fused fast path where it applies), same output."""
    theirs = make_layer("encoder", False).eval()
    ours = copy.deepcopy(theirs)
    layernorm.patch(ours, fuse_add=True)
    (x,) = inputs("encoder")
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-12, atol=1e-12)


def test_float32_residual_stream_with_a_bfloat16_sublayer_output():
    """x + s keeps PyTorch's promoted dtype: a float32 stream stays float32."""
    norm = layernorm.LayerNorm(8)
    x = torch.randn(4, 8)
    s = torch.randn(4, 8).bfloat16()
    y, h = blocks.add_then_norm(x, s, norm)
    assert h.dtype == torch.float32 and torch.equal(h, x + s)
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x + s, (8,), norm.weight, norm.bias))


def test_other_norms_run_as_they_are():
    class ScaledNorm(torch.nn.LayerNorm):
        def forward(self, x):
            return 2 * super().forward(x)

    x, s = torch.randn(4, 8), torch.randn(4, 8)
    y, h = blocks.add_then_norm(x, s, ScaledNorm(8))
    torch.testing.assert_close(y, 2 * torch.nn.functional.layer_norm(x + s, (8,)))
    y, h = blocks.add_then_norm(x, s, torch.nn.RMSNorm(8))
    torch.testing.assert_close(y, torch.nn.functional.rms_norm(x + s, (8,)), rtol=1e-5, atol=1e-6)


def test_unpatch_restores_pytorchs_classes_and_the_default_leaves_layers_alone():
    model = torch.nn.TransformerEncoder(make_layer("encoder", True), num_layers=2, enable_nested_tensor=False)
    assert layernorm.patch(model) == 2 * 2 + 0  # norms only by default
    assert all(type(layer) is torch.nn.TransformerEncoderLayer for layer in model.layers)
    assert layernorm.patch(model, fuse_add=True) == 2  # the layers (norms already ours)
    assert all(type(layer) is layernorm.TransformerEncoderLayer for layer in model.layers)
    assert layernorm.unpatch(model) == 2 + 4
    assert all(type(layer) is torch.nn.TransformerEncoderLayer for layer in model.layers)


def test_fuse_add_must_be_a_bool():
    with pytest.raises(TypeError, match="fuse_add must be a bool"):
        layernorm.patch(torch.nn.LayerNorm(4), fuse_add="yes")
