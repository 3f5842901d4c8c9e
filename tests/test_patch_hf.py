"""patch on HuggingFace models and on norms of every kind: what it replaces, what it leaves and why.

The models are built from tiny configs with random weights (nothing is
downloaded); the norms' own weights and biases are randomised too, so that a
norm that ignored them, or used the wrong epsilon, would show in the logits.
"""

import copy
import io
import warnings
from collections import Counter

import pytest
import torch

import layernorm
from layernorm.patching.recognize import is_ours

transformers = pytest.importorskip("transformers")

VOCAB = 100
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=VOCAB)


def _config(name, **values):
    return getattr(transformers, name)(**values)


# name -> (model class, config); two layers (one per stack for T5) of width 32.
MODELS = {
    "gpt2": ("GPT2LMHeadModel", lambda: _config("GPT2Config", vocab_size=VOCAB, n_positions=32, n_embd=32,
                                                n_layer=2, n_head=4)),
    "bert": ("BertForMaskedLM", lambda: _config("BertConfig", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=64,
                                               max_position_embeddings=32)),
    "t5": ("T5ForConditionalGeneration", lambda: _config("T5Config", vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64,
                                                         num_layers=1, num_decoder_layers=1, num_heads=4)),
    "llama": ("LlamaForCausalLM", lambda: _config("LlamaConfig", **SMALL)),
    "mistral": ("MistralForCausalLM", lambda: _config("MistralConfig", **SMALL)),
    "qwen2": ("Qwen2ForCausalLM", lambda: _config("Qwen2Config", **SMALL)),
    "qwen3": ("Qwen3ForCausalLM", lambda: _config("Qwen3Config", head_dim=8, **SMALL)),  # + q/k norms per head
    "gemma": ("GemmaForCausalLM", lambda: _config("GemmaConfig", head_dim=8, **SMALL)),
    "gemma2": ("Gemma2ForCausalLM", lambda: _config("Gemma2Config", head_dim=8, **SMALL)),
    "gemma3": ("Gemma3ForCausalLM", lambda: _config("Gemma3TextConfig", head_dim=8, **SMALL)),  # + q/k norms
    "phi3": ("Phi3ForCausalLM", lambda: _config("Phi3Config", pad_token_id=0, **SMALL)),
    "falcon": ("FalconForCausalLM", lambda: _config("FalconConfig", hidden_size=32, num_hidden_layers=2,
                                                   num_attention_heads=4, vocab_size=VOCAB)),
    "opt": ("OPTForCausalLM", lambda: _config("OPTConfig", hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                             num_attention_heads=4, vocab_size=VOCAB, max_position_embeddings=32,
                                             word_embed_proj_dim=32)),
    "nemotron": ("NemotronForCausalLM", lambda: _config("NemotronConfig", head_dim=8, partial_rotary_factor=0.5,
                                                       **SMALL)),
    "mamba2": ("Mamba2ForCausalLM", lambda: _config("Mamba2Config", hidden_size=32, num_hidden_layers=2, num_heads=4,
                                                   head_dim=16, state_size=8, n_groups=1, expand=2,
                                                   vocab_size=VOCAB)),
}
# Every norm 1 + weight (Gemma's RMS norms, Nemotron's layer norm): replaced, with weight_offset=1.
OFFSET_MODELS = {"gemma", "gemma2", "gemma3", "nemotron"}
GATED_REASON = "unknown forward: it takes more than the input (gate)"
# model -> {end of the class name of the norms left: the reason}; every other norm is replaced.
# (Mamba-2's gated norm is MambaRMSNormGated up to transformers 5.24, Mamba2RMSNormGated from 5.25.)
LEFT_MODELS = {"mamba2": {"RMSNormGated": GATED_REASON}}


def left_reason(model_name, class_name):
    """The reason patch gives for leaving a norm of this class, None if it replaces it."""
    return next((reason for end, reason in LEFT_MODELS.get(model_name, {}).items() if class_name.endswith(end)), None)


def is_norm(module):
    """The test's own notion, by class name, independent of what patch recognises."""
    return "norm" in type(module).__name__.lower()


def build(name, seed=0):
    class_name, config = MODELS[name]
    if not hasattr(transformers, class_name):
        pytest.skip(f"this transformers ({transformers.__version__}) has no {class_name}")
    torch.manual_seed(seed)
    try:
        model = getattr(transformers, class_name)(config()).eval()
    except Exception as error:  # a config this version cannot build offline
        pytest.skip(f"cannot build {class_name} offline: {type(error).__name__}: {error}")
    with torch.no_grad():
        for module in model.modules():
            if is_norm(module):
                for param_name, param in module.named_parameters(recurse=False):
                    param.normal_(1.0 if param_name == "weight" else 0.0, 0.3)
    return model


def logits(model, name):
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(1))
    extra = {"decoder_input_ids": tokens} if name == "t5" else {}
    with torch.no_grad():
        return model(input_ids=tokens, **extra).logits


def use_reference(model):
    """Run the independent implementation, not PyTorch's op again."""
    for module in model.modules():
        if is_ours(type(module)):
            module.impl = "reference"


def patch_recording_warnings(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = layernorm.patch(model)
    return report, [w for w in caught if issubclass(w.category, layernorm.PatchWarning)]


@pytest.mark.parametrize("name", list(MODELS))
def test_patch_replaces_every_norm_and_keeps_logits(name):
    model = build(name)
    norms = {n: m for n, m in model.named_modules() if is_norm(m)}
    classes = {n: type(m) for n, m in norms.items()}
    assert norms
    params = dict(model.named_parameters())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = logits(model, name)

    report, warned = patch_recording_warnings(model)

    # recognised as norm-like, reported, left alone
    left = {n for n, cls in classes.items() if left_reason(name, cls.__name__)}
    assert sorted(item.name for item in report.left) == sorted(left)
    assert all(item.reason == left_reason(name, classes[item.name].__name__) for item in report.left)
    assert len(warned) == len(left) and all(GATED_REASON in str(w.message) for w in warned)
    assert all(type(norms[n]) is classes[n] for n in left)
    replaced = {n: m for n, m in norms.items() if n not in left}
    assert replaced and report == len(replaced)
    assert report.replaced == dict(Counter(classes[n].__name__ for n in replaced))
    offset = 1.0 if name in OFFSET_MODELS else 0.0
    for n, m in replaced.items():
        assert is_ours(type(m)) and isinstance(m, classes[n]), n
        spec = getattr(m, "layernorm_spec", None)  # None: PyTorch's own class, now ours
        assert (spec.weight_offset if spec else 0.0) == offset, n
    # The same Parameter objects under the same names, and the same values (an offset stays out of
    # the stored weight): optimizers and state dicts keep working.
    assert [k for k, _ in model.named_parameters()] == list(params)
    assert all(p is params[k] for k, p in model.named_parameters())
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    use_reference(model)
    torch.testing.assert_close(logits(model, name), before, rtol=1e-5, atol=1e-5)

    assert layernorm.unpatch(model) == report
    assert all(type(m) is classes[n] for n, m in norms.items())
    assert not any(hasattr(m, "impl") for m in norms.values())
    assert torch.equal(logits(model, name), before)


@pytest.mark.parametrize("name", sorted(set(MODELS) - set(LEFT_MODELS)))
def test_patch_in_bfloat16_is_within_its_rounding(name):
    """Each norm within two bfloat16 units of HF's own on the same input; logits near HF's."""
    model = build(name)
    exact = logits(model, name)  # float32
    model.to(torch.bfloat16)
    seen = {}

    def record(module, args, out):  # each norm's first input and HF's output for it
        seen.setdefault(module, (args[0], out))

    hooks = [m.register_forward_hook(record) for m in model.modules() if is_norm(m)]
    theirs = logits(model, name).float()

    report, warned = patch_recording_warnings(model)  # verified in bfloat16 too
    assert report == len(hooks) and not warned
    for hook in hooks:
        hook.remove()
    ours = logits(model, name).float()

    assert len(seen) == len(hooks)
    eps = torch.finfo(torch.bfloat16).eps
    with torch.no_grad():
        for module, (x, out) in seen.items():
            y = module(x)
            assert y.dtype == out.dtype
            allowed = 2 * eps * (out.float().abs() + out.float().abs().mean())
            assert ((y.float() - out.float()).abs() <= allowed).all(), type(module).__name__
    # Rounding differs in the norms only, and no more than bfloat16's own error.
    own_error = (theirs - exact).abs().max()
    assert (ours - theirs).abs().max() <= 3 * own_error
    layernorm.unpatch(model)
    assert torch.equal(logits(model, name).float(), theirs)


# ---------------------------------------------------------------------------
# Cast orders, on HF's own norm classes


def hf_class(model_type, class_name):
    module = pytest.importorskip(f"transformers.models.{model_type}.modeling_{model_type}")
    return getattr(module, class_name)


NORM_CLASSES = [("llama", "LlamaRMSNorm", "cast_then_weight"), ("t5", "T5LayerNorm", "cast_to_weight_dtype"),
                ("olmo2", "Olmo2RMSNorm", "weight_then_cast"), ("cohere", "CohereLayerNorm", "weight_then_cast"),
                ("gemma", "GemmaRMSNorm", "weight_then_cast")]
DTYPES = [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
          (torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16), (torch.float16, torch.float32)]


@pytest.mark.parametrize("model_type, class_name, order", NORM_CLASSES)
def test_each_cast_order_gives_the_originals_dtype_and_values(model_type, class_name, order):
    cls = hf_class(model_type, class_name)
    torch.manual_seed(0)
    original = cls(48)
    assert layernorm.patch(original) == 1
    assert original.layernorm_spec.cast_order == order
    assert order in repr(original) and "eps=" in repr(original)
    offset = 1.0 if class_name.startswith("Gemma") else 0.0
    assert original.layernorm_spec.weight_offset == offset
    assert ("weight_offset=1.0" in repr(original)) == bool(offset)
    for x_dtype, param_dtype in DTYPES:
        ours = copy.deepcopy(original).to(param_dtype)
        with torch.no_grad():
            ours.weight.normal_(1.0 - offset, 0.5)  # Gemma's weight is centred on 0
        theirs = copy.deepcopy(ours)
        layernorm.unpatch(theirs)
        assert type(theirs) is cls
        x = (torch.randn(3, 5, 48) * 2 + 0.5).to(x_dtype)
        with torch.no_grad():
            expected, actual = theirs(x), ours(x)
        assert actual.dtype == expected.dtype, (x_dtype, param_dtype)
        low = max((x_dtype, param_dtype), key=lambda d: torch.finfo(d).eps)
        eps = torch.finfo(low).eps
        allowed = (2 if low != torch.float32 else 16) * eps * (expected.abs() + expected.abs().mean())
        assert ((actual.double() - expected.double()).abs() <= allowed).all(), (x_dtype, param_dtype)
        if x_dtype == param_dtype != torch.float32:  # one fused call, rounding where the original does
            differ = (actual != expected).float().mean().item()
            assert differ <= 0.02, f"{differ:.1%} of the elements differ in the last bit"


def test_gradients_reach_the_same_parameters():
    cls = hf_class("llama", "LlamaRMSNorm")
    norm = cls(16)
    optimizer = torch.optim.SGD(norm.parameters(), lr=0.1)  # built before the swap
    layernorm.patch(norm)
    norm(torch.randn(4, 16)).square().sum().backward()
    optimizer.step()
    assert norm.weight.grad is not None and not torch.equal(norm.weight.detach(), torch.ones(16))


@pytest.mark.parametrize("impl", [None, "reference"])
def test_offset_norm_gradients_are_the_originals(impl):
    """d/dweight of (1 + weight) is 1: the weight's gradient, and the input's, are HF's own."""
    cls = hf_class("gemma", "GemmaRMSNorm")
    torch.manual_seed(0)
    theirs = cls(40, eps=1e-5)
    with torch.no_grad():
        theirs.weight.normal_(0.0, 0.5)
    ours = copy.deepcopy(theirs)
    stored = ours.weight.detach().clone()
    assert layernorm.patch(ours) == 1
    ours.impl = impl
    assert torch.equal(ours.weight, stored)  # the offset is the op's, not added to the weight
    x = (torch.randn(3, 7, 40) * 2 + 0.5).requires_grad_()
    dy = torch.randn(3, 7, 40)
    grads = []
    for module in (theirs, ours):
        module.zero_grad()
        x.grad = None
        y = module(x)
        y.backward(dy)
        grads.append((y.detach(), x.grad.clone(), module.weight.grad.clone()))
    for expected, actual in zip(*grads):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours.weight, stored)


def test_a_patched_model_pickles_and_copies():
    model = build("t5")
    layernorm.patch(model)
    before = logits(model, "t5")
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for clone in (torch.load(buffer, weights_only=False), copy.deepcopy(model)):
        norm = clone.encoder.final_layer_norm
        assert is_ours(type(norm)) and type(norm).layernorm_original.__name__ == "T5LayerNorm"
        assert torch.equal(logits(clone, "t5"), before)


# ---------------------------------------------------------------------------
# What patch leaves, and why


class Halved(torch.nn.Module):
    def forward(self, w):
        return w / 2


def test_the_report_lists_what_was_left_and_why():
    class ScaledNorm(torch.nn.LayerNorm):  # a subclass that computes something else
        def forward(self, x):
            return 2 * super().forward(x)

    class GatedRMSNorm(torch.nn.Module):  # takes a second input
        def __init__(self, n):
            super().__init__()
            self.weight, self.eps = torch.nn.Parameter(torch.ones(n)), 1e-6

        def forward(self, x, gate=None):
            x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
            return x if gate is None else x * gate

    class Float32RMSNorm(torch.nn.Module):  # always returns float32: ours keeps the input's dtype
        def __init__(self, n):
            super().__init__()
            self.weight, self.epsilon = torch.nn.Parameter(torch.ones(n)), 1e-5

        def forward(self, x):
            x = x.float()
            return self.weight.float() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.epsilon)

    class SubtleNorm(torch.nn.LayerNorm):  # a LayerNorm, exactly, as ours would be: replaced
        pass

    parametrized = torch.nn.LayerNorm(8)
    torch.nn.utils.parametrize.register_parametrization(parametrized, "weight", Halved())
    model = torch.nn.Sequential(ScaledNorm(8), GatedRMSNorm(8), Float32RMSNorm(8), parametrized, SubtleNorm(8),
                                torch.nn.GroupNorm(2, 8), torch.nn.BatchNorm1d(8))
    report, warned = patch_recording_warnings(model)

    assert report == 1 and report.replaced == {"SubtleNorm": 1}
    reasons = {item.name: item.reason for item in report.left}
    assert sorted(reasons) == ["0", "1", "2", "3"]  # group and batch norm are not norms of the last dim
    assert reasons["0"].startswith("unknown forward: it does not compute a layer norm")
    assert reasons["1"] == "unknown forward: it takes more than the input (gate)"
    assert reasons["2"] == ("failed verification: ours returns bfloat16 where the original returns float32, "
                            "on bfloat16 input with bfloat16 parameters")
    assert reasons["3"].startswith("parametrized")
    assert len(warned) == 4 and "left 3 (ParametrizedLayerNorm)" in str(warned[3].message)
    text = str(report)
    assert text.startswith("replaced 1 module (SubtleNorm: 1); left 4 norm-like modules:")
    assert "GatedRMSNorm x1: unknown forward: it takes more than the input (gate)" in text
    assert repr(report).startswith("PatchReport(replaced={'SubtleNorm': 1}, left=[LeftModule(name='0'")
    assert int(report) == 1 and report + 1 == 2 and f"{report:d}" == "1"


def test_meta_device_norms_are_verified_on_the_cpu():
    cls = hf_class("llama", "LlamaRMSNorm")
    with torch.device("meta"):
        model = torch.nn.Sequential(cls(16), torch.nn.LayerNorm(16))
    assert layernorm.patch(model) == 2
    model.to_empty(device="cpu")
    assert model(torch.randn(2, 16)).shape == (2, 16)


def test_fsdp_wrapped_norms_are_left(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    fsdp = pytest.importorskip("torch.distributed.fsdp")
    if not hasattr(fsdp, "fully_shard"):
        pytest.skip("this PyTorch has no fully_shard")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
        fsdp.fully_shard(model)  # one process: the parameters become sharded DTensors all the same
        report, warned = patch_recording_warnings(model)
    finally:
        dist.destroy_process_group()
    assert report == 0
    assert [(item.name, item.reason) for item in report.left] == [("1", "wrapped by FSDP: its parameters are sharded")]
    assert len(warned) == 1


def test_patch_warns_can_be_turned_off():
    model = build("mamba2")
    with warnings.catch_warnings():
        warnings.simplefilter("error", layernorm.PatchWarning)
        report = layernorm.patch(model, warn=False)
    gated = {type(m).__name__ for m in model.modules() if left_reason("mamba2", type(m).__name__)}
    assert len(gated) == 1 and len(report.left) == 2 and f"{gated.pop()} x2: {GATED_REASON}" in str(report)


# ---------------------------------------------------------------------------
# patch_transformers: models created later


def test_patch_transformers_patches_models_of_that_type_until_undone(tmp_path):
    with layernorm.patch_transformers("llama") as handle:
        llama = build("llama")
        qwen2 = build("qwen2")
        assert all(is_ours(type(m)) for m in llama.modules() if is_norm(m))
        assert not any(is_ours(type(m)) for m in qwen2.modules())
        # from_pretrained: built on the meta device, then loaded
        layernorm.unpatch(llama)
        expected = logits(llama, "llama")
        llama.save_pretrained(tmp_path)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        assert all(is_ours(type(m)) for m in loaded.modules() if is_norm(m))
        use_reference(loaded)
        torch.testing.assert_close(logits(loaded, "llama"), expected, rtol=1e-5, atol=1e-5)
    assert "undone" in repr(handle)
    assert not any(is_ours(type(m)) for m in build("llama").modules())


def test_patch_transformers_for_every_type_warns_once_per_module_left():
    handle = layernorm.patch_transformers()
    try:
        assert all(is_ours(type(m)) for m in build("gpt2").modules() if is_norm(m))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gemma = build("gemma")  # offset RMS norms: replaced, nothing to warn about
            mamba2 = build("mamba2")  # Mamba2Model's post_init, then Mamba2ForCausalLM's
        assert all(is_ours(type(m)) for m in gemma.modules() if is_norm(m))
        left = [w for w in caught if issubclass(w.category, layernorm.PatchWarning)]
        gated = [m for m in mamba2.modules() if left_reason("mamba2", type(m).__name__)]
        assert len(left) == len(gated) == 2
        assert all(GATED_REASON in str(w.message) for w in left)
    finally:
        layernorm.unpatch_transformers()
    handle.undo()  # already undone: nothing to do
    assert not any(is_ours(type(m)) for m in build("gpt2").modules())


def test_patch_transformers_checks_the_model_type():
    with pytest.raises(ValueError, match="no model type 'lama'"):
        layernorm.patch_transformers("lama")
    with pytest.raises(TypeError, match="model_type must be a str"):
        layernorm.patch_transformers(3)
