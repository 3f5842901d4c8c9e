"""Everything Triton: the kernels, their launches and launch table, and the operators over them.

- :mod:`.ops`: the kernels as PyTorch operators (``torch.library``) with their
  autograd; :class:`~.ops.Variant`, an op's configuration by name; :mod:`.func`
  (``torch.func``) and :mod:`.dtensor` (sharded rows) on top of them;
- :mod:`.norm`: the entry kernels (LayerNorm / RMSNorm, optional fused
  residual add; forward, backward), each picking a path by its flags;
- the paths: :mod:`.forward_rows`, :mod:`.forward_chunked`,
  :mod:`.backward_rows`, :mod:`.backward_chunked`, :mod:`.backward_split`,
  :mod:`.backward_held`, :mod:`.backward_paired`,
  and :mod:`.partials` (the deterministic dweight/dbias reduction), built
  from the helpers of :mod:`.shared`;
- :mod:`.launch`: allocate outputs, pick the launch shape, launch (through
  :mod:`.direct`);
- :mod:`.table`: launch parameters by row width, swept by
  ``scripts/sweep_launch.py`` and written by :mod:`.table_writer`;
- :mod:`.offline`: the kernels compiled for sm_90 without a GPU (registers,
  spills);
- :mod:`.precompile`: the kernels of many launches compiled ahead of them,
  in parallel processes, into Triton's cache (the sweep's candidates).

Importing this package, :mod:`.ops`, :mod:`.func` or :mod:`.dtensor` does not
import Triton; the kernels' modules and :mod:`.launch` do (at the first launch).
"""
