"""patch / unpatch: in place, same parameter tensors, logits unchanged on a real model."""

import copy

import pytest
import torch

import layernorm


def tiny_gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=97, n_positions=32, n_embd=48, n_layer=3, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()  # random weights, nothing downloaded
    with torch.no_grad():  # non-trivial gains and biases, so a wrong norm shows
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
    return model


def test_patch_gpt2_keeps_logits_and_parameters():
    model = tiny_gpt2()
    tokens = torch.randint(0, 97, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(tokens).logits
    params_before = {name: p for name, p in model.named_parameters()}

    swapped = layernorm.patch(model)

    assert swapped == 2 * 3 + 1  # ln_1 and ln_2 per block, and ln_f
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == swapped and all(type(m) is layernorm.LayerNorm for m in norms)
    for name, p in model.named_parameters():
        assert p is params_before[name]  # the very same tensors
    for m in norms:
        m.impl = "reference"  # run the independent implementation, not torch's op again
    with torch.no_grad():
        after = model(tokens).logits
    assert (after - before).abs().max().item() < 1e-5

    assert layernorm.unpatch(model) == swapped
    assert all(type(m) is torch.nn.LayerNorm for m in norms)
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, before)


def test_patch_counts_and_leaves_subclasses_that_compute_otherwise_alone():
    class MyNorm(torch.nn.LayerNorm):
        def forward(self, x):  # not a layer norm: the check before the swap shows it
            return super().forward(x) + 1

    model = torch.nn.Sequential(
        torch.nn.LayerNorm(8), torch.nn.Linear(8, 8), torch.nn.RMSNorm(8), MyNorm(8)
    ).to(torch.float64)
    with pytest.warns(layernorm.PatchWarning, match=r"left 3 \(MyNorm\) as it was: unknown forward"):
        assert layernorm.patch(model) == 2
    assert type(model[0]) is layernorm.LayerNorm and type(model[2]) is layernorm.RMSNorm
    assert type(model[3]) is MyNorm
    assert model[0].weight.dtype == torch.float64
    with pytest.warns(layernorm.PatchWarning):
        assert layernorm.patch(model) == 0  # already ours
    assert layernorm.unpatch(model) == 2


def test_patch_root_module():
    norm = torch.nn.LayerNorm(4)
    assert layernorm.patch(norm) == 1 and type(norm) is layernorm.LayerNorm


class ZeroCenteredRMSNorm(torch.nn.Module):
    """x_hat * (1 + weight), the weight stored centred on 0, rounded before the gain (Llama's order)."""

    def __init__(self, n, offset=1.0):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(n))
        self.variance_epsilon, self.offset = 1e-5, offset

    def forward(self, hidden):
        x = hidden.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return (self.offset + self.weight) * x.to(hidden.dtype)


class LayerNorm1P(torch.nn.LayerNorm):
    def forward(self, x):
        return torch.nn.functional.layer_norm(x, self.normalized_shape, self.weight + 1.0, self.bias, self.eps)


def test_patch_runs_offset_norms_and_leaves_other_offsets():
    torch.manual_seed(0)
    model = torch.nn.Sequential(ZeroCenteredRMSNorm(24), LayerNorm1P(24), ZeroCenteredRMSNorm(24, offset=2.0))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    stored = model[0].weight.detach().clone()
    original = [type(m) for m in model]
    with pytest.warns(layernorm.PatchWarning):
        report = layernorm.patch(model)

    assert report == 2 and report.replaced == {"ZeroCenteredRMSNorm": 1, "LayerNorm1P": 1}
    reasons = {item.name: item.reason for item in report.left}
    assert list(reasons) == ["2"]
    assert reasons["2"].startswith("unknown forward: it does not compute")  # only 1 + weight is recognised
    norm = model[0]
    assert norm.layernorm_spec.weight_offset == 1.0 and norm.layernorm_spec.cast_order == "cast_then_weight"
    assert "weight_offset=1.0" in repr(norm)
    assert torch.equal(norm.weight, stored)  # the offset is the op's, never the stored weight's

    x = torch.randn(3, 5, 24) * 2 + 0.5
    expected64 = x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-5) * (1 + stored.double())
    norm.impl = "reference"
    with torch.no_grad():
        torch.testing.assert_close(norm(x).double(), expected64, rtol=1e-5, atol=1e-5)
        for x_dtype, p_dtype in ((torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)):
            ours = copy.deepcopy(norm).to(p_dtype)
            theirs = copy.deepcopy(ours)
            layernorm.unpatch(theirs)
            expected, actual = theirs(x.to(x_dtype)), ours(x.to(x_dtype))
            assert actual.dtype == expected.dtype
            eps = torch.finfo(torch.bfloat16).eps
            allowed = 2 * eps * (expected.double().abs() + expected.double().abs().mean())
            assert ((actual.double() - expected.double()).abs() <= allowed).all(), (x_dtype, p_dtype)

    assert layernorm.unpatch(model) == 2
    assert [type(m) for m in model] == original and torch.equal(model[0].weight, stored)


def test_an_offset_layer_norm_runs_layer_norm_with_the_offset():
    torch.manual_seed(0)
    norm = LayerNorm1P(24)
    with torch.no_grad():
        norm.weight.normal_(0.0, 0.5)
        norm.bias.normal_(0.0, 0.5)
    x = torch.randn(3, 5, 24) * 2 + 0.5
    with torch.no_grad():
        expected = norm(x)
    stored = norm.weight.detach().clone()
    assert layernorm.patch(norm) == 1
    assert norm.layernorm_spec.kind == "layer" and norm.layernorm_spec.weight_offset == 1.0
    assert torch.equal(norm.weight, stored)
    for impl in ("torch", "reference"):
        norm.impl = impl
        with torch.no_grad():
            torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)
    dy = torch.randn(3, 5, 24)
    x.requires_grad_()
    ours = torch.autograd.grad(norm(x), (x, norm.weight, norm.bias), dy)
    layernorm.unpatch(norm)
    theirs = torch.autograd.grad(norm(x), (x, norm.weight, norm.bias), dy)
    for got, want in zip(ours, theirs):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
