"""layernorm: Layer Normalization for PyTorch.

- :mod:`layernorm.reference`: the annotated math, forward and backward; the test oracle.
- :func:`layer_norm`, :func:`rms_norm`: drop-in ``F.layer_norm`` / ``F.rms_norm``.
- :class:`LayerNorm`, :class:`RMSNorm`: drop-in ``torch.nn.LayerNorm`` / ``torch.nn.RMSNorm``.
- :func:`add_layer_norm`, :func:`add_rms_norm`, :class:`AddLayerNorm`, :class:`AddRMSNorm`:
  the pre-norm transformer step, residual add + norm, fused.
- :class:`TransformerEncoderLayer`, :class:`TransformerDecoderLayer`: PyTorch's layers with
  each residual add fused into the norm after it (:mod:`layernorm.blocks`).
- :func:`patch`, :func:`unpatch`: swap the norm modules inside a model for ours, each checked
  first (PyTorch's, HuggingFace's, a model's own); :class:`PatchReport` says what was done.
- :func:`patch_transformers`, :func:`unpatch_transformers`: the same for every transformers model
  created from now on.
"""

from .blocks import TransformerDecoderLayer, TransformerEncoderLayer
from .functional import add_layer_norm, add_rms_norm, layer_norm, rms_norm
from .modules import AddLayerNorm, AddRMSNorm, LayerNorm, RMSNorm
from .patching import PatchReport, PatchWarning, patch, patch_transformers, unpatch, unpatch_transformers

__version__ = "0.1.0"

__all__ = [
    "layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm",
    "LayerNorm", "RMSNorm", "AddLayerNorm", "AddRMSNorm",
    "TransformerEncoderLayer", "TransformerDecoderLayer",
    "patch", "unpatch", "PatchReport", "PatchWarning", "patch_transformers", "unpatch_transformers",
    "__version__",
]
