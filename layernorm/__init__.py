"""layernorm: Layer Normalization for PyTorch.

- :mod:`layernorm.reference`: the annotated math, forward and backward; the test oracle.
- :func:`layer_norm`, :func:`rms_norm`: drop-in ``F.layer_norm`` / ``F.rms_norm``.
- :class:`LayerNorm`, :class:`RMSNorm`: drop-in ``torch.nn.LayerNorm`` / ``torch.nn.RMSNorm``.
- :func:`patch`, :func:`unpatch`: swap PyTorch's modules inside a model for ours.
"""

from .functional import layer_norm, rms_norm
from .modules import LayerNorm, RMSNorm
from .patch import patch, unpatch

__version__ = "0.1.0"

__all__ = ["layer_norm", "rms_norm", "LayerNorm", "RMSNorm", "patch", "unpatch", "__version__"]
