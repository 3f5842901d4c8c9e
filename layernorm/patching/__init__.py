"""Swap the norm modules inside a model for ours, each one checked first.

- :mod:`.swap`: :func:`patch` / :func:`unpatch`;
- :mod:`.recognize`: which modules are norms, checked on probe inputs before a swap;
- :mod:`.adopted`: other libraries' norm classes with our forward, in their cast orders;
- :mod:`.report`: what :func:`patch` did (:class:`PatchReport`, :class:`PatchWarning`);
- :mod:`.transformers_hook`: :func:`patch_transformers`, for transformers models created later.
"""

from .report import PatchReport, PatchWarning
from .swap import patch, unpatch
from .transformers_hook import patch_transformers, unpatch_transformers

__all__ = ["patch", "unpatch", "PatchReport", "PatchWarning", "patch_transformers", "unpatch_transformers"]
