"""patch / unpatch: in place, same parameter tensors, logits unchanged on a real model."""

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
