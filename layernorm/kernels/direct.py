"""Launch compiled Triton kernels without Triton's per-call binding.

``kernel[grid](*args, **constexprs)`` is slow on the host: on every call
Triton's ``JITFunction.run`` binds the arguments, specializes each one (a
tensor's dtype and 16-byte alignment, an integer's ``== 1`` and ``% 16``),
builds a cache key from them and from the constexprs, looks the compiled
kernel up, and only then calls the compiled kernel's launcher. For our
30-argument kernels that is tens of microseconds per launch, several times
the GPU time of a small LayerNorm.

:class:`DirectKernel` keeps the compiled kernel under a key of its own,
computed from the same features, and calls its launcher directly::

    norm_fwd = DirectKernel(norm_fwd_kernel)
    norm_fwd.launch((programs,), x, y, ..., BLOCK_M=128, num_warps=4)

The first call with a new key goes through Triton's own path (which compiles
or finds the kernel in Triton's caches, and launches it); the compiled kernel
it returns is kept for the later calls with that key. The key is at least as
fine as Triton's: equal keys mean Triton would have picked the same compiled
kernel. ``tests/direct_launch_check.py`` checks, on every Triton version we
support, that the direct call passes the launcher exactly what Triton's own
path passes.

Triton's own path is always taken:

- under the interpreter (``TRITON_INTERPRET=1``: no compiled kernel exists);
- while a launch hook (``launch_enter_hook`` / ``launch_exit_hook``), a
  kernel's pre-run hook or a pipeline-stage hook is installed, since those
  see every launch (profilers, Proton);
- for a compiled kernel whose launcher takes arguments in a layout this
  module does not recognise (checked by feature, see :func:`_argument_tail`);
- when ``LAYERNORM_DIRECT_LAUNCH=0`` is set.

Process-wide compile settings that Triton reads on every call
(``TRITON_DEBUG``, instrumentation modes) are not part of the key: changing
them after a kernel's first launch does not recompile it here.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Optional, Tuple

from torch import Tensor

try:  # where Triton keeps the launch hooks: its knobs (3.4 on), or CompiledKernel (up to 3.3)
    from triton import knobs as _knobs

    _HOOKS: Any = _knobs.runtime
except ImportError:  # pragma: no cover - Triton < 3.4
    from triton.compiler import CompiledKernel as _HOOKS

from triton.runtime.driver import driver as _driver
from triton.runtime.jit import JITFunction

ENABLED = os.environ.get("LAYERNORM_DIRECT_LAUNCH", "1") != "0"

# Compile options every launch asks for. The kernels were designed and measured with fused
# multiply-adds, Triton's default up to 3.9; 3.9 warns that the default turns to unfused, and
# asking explicitly keeps the same machine code (and roundings) on every Triton, with no warning.
# The interpreter ignores them.
COMPILE_OPTIONS: Dict[str, Any] = {"enable_fp_fusion": True}


def _hook_installed(hook: Any) -> bool:
    # Triton 3.5 on: a HookChain that is never None, empty unless something was added.
    if hook is None:
        return False
    calls = getattr(hook, "calls", None)
    return True if calls is None else bool(calls)


def hooks_installed(kernel: Any = None) -> bool:
    """Whether anything wants to see each launch, which only Triton's own path serves."""
    if _hook_installed(getattr(_HOOKS, "launch_enter_hook", None)):
        return True
    if _hook_installed(getattr(_HOOKS, "launch_exit_hook", None)):
        return True
    if getattr(_HOOKS, "add_stages_inspection_hook", None) is not None:  # changes Triton's own key
        return True
    return bool(kernel is not None and getattr(kernel, "pre_run_hooks", None))


def _kind(a: Any) -> str:
    if isinstance(a, Tensor):
        return "tensor"
    return {int: "int", float: "float"}.get(type(a), "other")


# What Triton specializes on, per runtime argument, as expressions of the argument ``a`` (never
# coarser than Triton's; the class is there so that an argument of another kind gets another key).
_KEY_PARTS = {
    # dtype, and whether the address is a multiple of 16 bytes
    "tensor": ("a.dtype", "a.data_ptr() % 16 == 0"),
    # == 1, a multiple of 16, and i32 / i64 / u64
    "int": ("a.__class__", "a == 1", "a % 16 == 0", "-2147483648 <= a < 2147483648",
            "-9223372036854775808 <= a < 9223372036854775808"),
    "float": ("a.__class__",),  # always fp32, never specialized on its value
    "other": ("a.__class__", "a"),
}


def key_function(kinds: Tuple[str, ...]):
    """A function of the runtime arguments returning their key (see _KEY_PARTS), generated
    once per kernel for the kinds of its arguments: a flat tuple, no loop, no type tests.
    An argument of another kind either raises (a tensor's attribute on a number) or gives
    another key (a number's class), so a miss re-checks the kinds."""
    names = [f"a{i}" for i in range(len(kinds))]
    parts = [_substitute(part, name) for name, kind in zip(names, kinds) for part in _KEY_PARTS[kind]]
    source = f"def key({', '.join(names)}):\n    return ({', '.join(parts)},)\n"
    namespace: Dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - built from the fixed expressions above
    return namespace["key"]


def _substitute(expression: str, name: str) -> str:
    return re.sub(r"\ba\b", name, expression)


def argument_key(args: Tuple[Any, ...]) -> Tuple[Any, ...]:
    """The key of ``args`` (tests; the launch path uses a generated :func:`key_function`)."""
    return key_function(tuple(_kind(a) for a in args))(*args)


def _argument_tail(kernel: JITFunction, compiled: Any, args: Tuple[Any, ...],
                   constexprs: Dict[str, Any]) -> Optional[Tuple[Any, ...]]:
    """What the launcher takes after our positional arguments, or None if its layout is unknown.

    Up to Triton 3.2 the launcher takes the non-constexpr arguments only; from
    3.3 on, every parameter in declaration order, constexpr values included
    (it ignores them). Told apart by the compiled signature's length, not by
    version number. Both layouts need the runtime parameters to come first and
    to be passed positionally, as ours are.
    """
    params = kernel.params
    runtime = [p for p in params if not p.is_constexpr]
    if len(args) != len(runtime) or any(p.is_constexpr for p in params[: len(args)]):
        return None
    signature = getattr(getattr(compiled, "src", None), "signature", None)
    if signature is None:
        return None
    if len(signature) == len(runtime) and len(runtime) != len(params):
        return ()
    if len(signature) == len(params):
        defaults = kernel.signature.parameters  # constexprs left out take their defaults
        tail = []
        for p in params[len(args):]:
            if p.name in constexprs:
                tail.append(constexprs[p.name])
            elif defaults[p.name].default is not defaults[p.name].empty:
                tail.append(defaults[p.name].default)
            else:
                return None
        return tuple(tail)
    return None


class DirectKernel:
    """A ``@triton.jit`` kernel launched through its cached compiled kernel (see the module docstring)."""

    def __init__(self, kernel: Any):
        self.kernel = kernel
        # the interpreter's kernels are not JITFunctions (nor are a docs build's, where Triton is mocked)
        self.direct = isinstance(JITFunction, type) and isinstance(kernel, JITFunction)
        # key -> (launcher, function handle, packed metadata, argument tail), or None: Triton's path
        self._compiled: Dict[Any, Optional[Tuple[Any, Any, Any, Tuple[Any, ...]]]] = {}
        self._kinds: Optional[Tuple[str, ...]] = None  # of the runtime arguments, set at the first launch
        self._key: Any = None

    def launch(self, grid: Tuple[int, ...], *args: Any, **constexprs: Any) -> None:
        """``kernel[grid](*args, **constexprs)``: runtime arguments positional, constexprs and
        ``num_warps`` / ``num_stages`` by keyword."""
        if not (self.direct and ENABLED) or hooks_installed(self.kernel):
            self._tritons_launch(grid, args, constexprs)
            return
        active = _driver.active
        device = active.get_current_device()
        try:
            entry = self._compiled.get((device, self._key(*args), tuple(constexprs.items())), False)
        except (AttributeError, TypeError):  # no key function yet, or arguments of other kinds
            entry = False
        if entry is False:
            entry = self._first_launch(grid, args, constexprs)
            try:
                self._compiled[(device, self._key(*args), tuple(constexprs.items()))] = entry
            except (AttributeError, TypeError):
                pass  # arguments of other kinds than the first launch's: Triton's path each time
            return
        if entry is None:
            self._tritons_launch(grid, args, constexprs)
            return
        run, function, metadata, tail = entry
        gx, gy, gz = grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1
        # No launch hooks: no launch metadata (the launcher reads it only for a hook).
        run(gx, gy, gz, active.get_current_stream(device), function, metadata, None, None, None, *args, *tail)

    def _tritons_launch(self, grid, args, constexprs):
        """``kernel[grid](...)`` with our compile options: compiles or finds the kernel, launches it,
        and returns the compiled kernel."""
        return self.kernel[grid](*args, **COMPILE_OPTIONS, **constexprs)

    def _first_launch(self, grid, args, constexprs):
        """Triton's own launch; returns what the direct path needs for the same key, or None."""
        compiled = self._tritons_launch(grid, args, constexprs)
        kinds = tuple(_kind(a) for a in args)
        if self._kinds is None:
            self._kinds, self._key = kinds, key_function(kinds)
        if kinds != self._kinds:  # the key function was made for other kinds: keep to Triton's path
            return None
        tail = _argument_tail(self.kernel, compiled, args, constexprs)
        if tail is None:
            return None
        try:
            run = compiled.run  # read first: it loads the module and sets the function handle
            return run, compiled.function, compiled.packed_metadata, tail
        except AttributeError:  # a compiled kernel of another shape: keep to Triton's path
            return None
