"""Bad input: a clear TypeError / ValueError at the API edge, naming what was expected and what came."""

import pytest
import torch

import layernorm

x = torch.randn(4, 8)


@pytest.mark.parametrize("fn", [layernorm.layer_norm, layernorm.rms_norm])
class TestBadInput:
    def test_trailing_shape_mismatch_names_both(self, fn):
        with pytest.raises(ValueError, match=r"normalized_shape \[7\].*input of shape \[4, 8\]"):
            fn(x, 7)

    def test_more_normalized_dims_than_input(self, fn):
        with pytest.raises(ValueError, match="normalized_shape"):
            fn(torch.randn(8), (2, 8))

    def test_integer_input(self, fn):
        with pytest.raises(TypeError, match="floating-point.*torch.int64"):
            fn(torch.arange(8).reshape(1, 8), 8)

    def test_not_a_tensor(self, fn):
        with pytest.raises(TypeError, match="torch.Tensor"):
            fn([[1.0, 2.0]], 2)

    def test_weight_wrong_shape(self, fn):
        with pytest.raises(ValueError, match=r"weight must have shape normalized_shape \[8\], got \[7\]"):
            fn(x, 8, torch.ones(7))

    def test_weight_integer(self, fn):
        with pytest.raises(TypeError, match="weight must be a floating-point"):
            fn(x, 8, torch.ones(8, dtype=torch.int32))

    def test_negative_eps(self, fn):
        with pytest.raises(ValueError, match="eps must be >= 0, got -0.1"):
            fn(x, 8, None, eps=-0.1)

    def test_nan_eps(self, fn):
        with pytest.raises(ValueError, match="eps must be >= 0"):
            fn(x, 8, None, eps=float("nan"))

    def test_eps_not_a_number(self, fn):
        with pytest.raises(TypeError, match="eps must be a real number"):
            fn(x, 8, None, eps="1e-5")

    @pytest.mark.parametrize("bad,err", [((), ValueError), (0, ValueError), (-8, ValueError), (8.0, TypeError), ("8", TypeError), ((8.0,), TypeError), (True, TypeError)])
    def test_bad_normalized_shape(self, fn, bad, err):
        with pytest.raises(err, match="normalized_shape"):
            fn(x, bad)

    def test_unknown_impl(self, fn):
        with pytest.raises(ValueError, match="impl must be one of"):
            fn(x, 8, impl="cuda")


def test_bias_wrong_shape():
    with pytest.raises(ValueError, match=r"bias must have shape normalized_shape \[8\], got \[2, 4\]"):
        layernorm.layer_norm(x, 8, torch.ones(8), torch.zeros(2, 4))


def test_bias_not_a_tensor():
    with pytest.raises(TypeError, match="bias must be a torch.Tensor or None"):
        layernorm.layer_norm(x, 8, None, 0.0)


def test_patch_needs_a_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        layernorm.patch("gpt2")
