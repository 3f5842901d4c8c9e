"""Triton kernels of layernorm and their launch tables.

- :mod:`.norm`: the kernels (LayerNorm / RMSNorm, optional fused residual add;
  forward, backward, and the deterministic dweight/dbias reduction).
- :mod:`.launch`: allocate outputs, pick the launch shape, launch.
- :mod:`.table`: launch parameters by row width, written by ``scripts/sweep_launch.py``.

Importing this package does not import Triton; :mod:`.norm` and :mod:`.launch` do.
"""
