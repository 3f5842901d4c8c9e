"""Does the direct launch pass the launcher exactly what Triton's own path passes?

Run as a program, with Triton compiling (``TRITON_INTERPRET`` unset), on a
machine with or without a GPU: a fake driver stands in for CUDA and Triton's
``compile`` is replaced by one that returns a recording kernel, so Triton's
real ``JITFunction.run`` (binding, specialization, cache key, argument
layout) runs unchanged and nothing reaches a device. Every launch that
``layernorm.kernels.launch`` makes, for every kernel and flag combination and
launch-table path, is sent both ways:

1. Triton's own path, ``kernel[grid](*args, **constexprs)``;
2. the direct path (``DirectKernel.launch``), which must not enter
   ``JITFunction.run`` once the key is known;

and the two recorded calls of the compiled kernel's launcher must match:
the same compiled kernel (so our key never merges two of Triton's), the
same grid, stream, function handle, metadata and arguments. The only
difference allowed is the one chosen on purpose: with no launch hook
installed, the direct path passes ``None`` for the hooks and the launch
metadata, where Triton 3.5 on passes empty hook chains (the launcher calls a
hook only when it is not ``None``).

    python3 tests/direct_launch_check.py          # exit 0: every launch matched
    python3 tests/direct_launch_check.py --time   # host time of both paths (launcher stubbed)
    bash scripts/check_triton_versions.sh         # the same on each Triton from 3.2 up

``tests/test_direct_launch.py`` runs it in CI with the installed Triton.
"""

from __future__ import annotations

import itertools
import os
import sys
import time

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("run without TRITON_INTERPRET: this checks the compiled kernels' launch path")

import torch  # noqa: E402
import triton  # noqa: E402
import triton.compiler  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from layernorm.kernels import direct, launch, table  # noqa: E402

STREAM = 0x5EED
CALLS = []  # (compiled kernel, arguments of its launcher)


class FakeDriver:
    """Just what JITFunction.run asks of a driver, for an sm_90 device 0."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return STREAM

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_device_interface(self):
        return torch.cuda

    def get_active_torch_device(self):
        return torch.device("cpu")


class RecordingKernel:
    """A compiled kernel whose launcher records its arguments instead of launching."""

    def __init__(self, src):
        self.src = src
        self.function = object()  # a handle: compared by identity
        self.packed_metadata = ("packed metadata", id(self))
        self.name = getattr(src, "name", "kernel")

    @property
    def run(self):
        return self._launch

    def _launch(self, *args):
        CALLS.append((self, args))

    def launch_metadata(self, grid, stream, *args):
        return None


COMPILED = []


def fake_compile(src, target=None, options=None, **_):
    COMPILED.append(RecordingKernel(src))
    return COMPILED[-1]


triton_runs = [0]
_triton_run = JITFunction.run


def counting_run(self, *args, **kwargs):
    triton_runs[0] += 1
    return _triton_run(self, *args, **kwargs)


def _empty_hook(hook) -> bool:
    return hook is None or (hasattr(hook, "calls") and not hook.calls)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b
    return type(a) is type(b) and a == b


class Mismatch(AssertionError):
    pass


def compare(name, ordinary, direct_call):
    (k1, a1), (k2, a2) = ordinary, direct_call
    if k1 is not k2:
        raise Mismatch(f"{name}: the direct path launched another compiled kernel than Triton's")
    if len(a1) != len(a2):
        raise Mismatch(f"{name}: {len(a2)} launcher arguments, Triton passes {len(a1)}")
    # grid x3, stream, function, metadata: identical
    for i in range(6):
        if not _same(a1[i], a2[i]):
            raise Mismatch(f"{name}: launcher argument {i} is {a2[i]!r}, Triton passes {a1[i]!r}")
    # launch metadata and hooks: Triton's are empty (no hook installed), ours None
    if not (_empty_hook(a1[7]) and _empty_hook(a1[8])):
        raise Mismatch(f"{name}: a launch hook is installed; the direct path should not run")
    if a2[6] is not None or a2[7] is not None or a2[8] is not None:
        raise Mismatch(f"{name}: the direct path passes launch metadata or hooks")
    for i in range(9, len(a1)):
        if not _same(a1[i], a2[i]):
            raise Mismatch(f"{name}: kernel argument {i - 9} is {a2[i]!r}, Triton passes {a1[i]!r}")


LAUNCHES = [0]


def shadow_launch(self, grid, *args, **constexprs):
    """Each launch both ways, compared (replaces DirectKernel.launch while checking)."""
    name = self.kernel.fn.__name__
    del CALLS[:]
    self.kernel[grid](*args, **direct.COMPILE_OPTIONS, **constexprs)  # as DirectKernel asks Triton
    ordinary = CALLS[-1]
    key_known = True
    before = triton_runs[0]
    _direct_launch(self, grid, *args, **constexprs)
    if triton_runs[0] != before:  # a new key: that call went through Triton; now the direct one
        key_known = False
        before = triton_runs[0]
        _direct_launch(self, grid, *args, **constexprs)
    if triton_runs[0] != before:
        raise Mismatch(f"{name}: the direct path entered JITFunction.run with a known key")
    compare(name, ordinary, CALLS[-1])
    LAUNCHES[0] += 1
    return key_known


_direct_launch = direct.DirectKernel.launch


def tensors(m, n, dtype, offset):
    """Rows of x, dy, r and a weight/bias; ``offset`` elements in, so the address may be unaligned,
    and rows strided when ``offset`` is set (a wider parent tensor)."""
    g = torch.Generator().manual_seed(m * 1000 + n)
    width = n + offset
    def rows():
        return torch.randn(m * width + offset, generator=g).to(dtype)[offset:].as_strided((m, n), (width, 1))
    return rows(), rows(), rows(), torch.randn(n + offset, generator=g).to(dtype)[offset:]


PATHS = {  # table overrides reaching each launch path on small rows
    "register": dict(),
    "persistent": dict(launch=table.Launch(2, 64, 4, True, 1), programs=2),
    "chunked": dict(max_single_block_n=16, chunk=16, programs=2),
    "chunked persistent": dict(launch=table.Launch(2, 16, 4, False, 1), programs=2),
}
BACKWARD_PATHS = {
    "register": dict(),
    "lean": dict(launch=table.Launch(1, 64, 4, True, 1, lean=True), programs=2),
    "chunked": dict(max_single_block_n=16, chunk=16, programs=2),
    "split": dict(launch=table.Launch(2, 16, 4, False, 1, split=True), programs=4),
    "held": dict(launch=table.Launch(2, 16, 4, False, 1, hold_partials=True), programs=2),
    "held loop": dict(launch=table.Launch(2, 16, 4, False, 1, hold_partials=True, unroll=False), programs=2),
    "paired": dict(launch=table.Launch(1, 16, 4, False, 1, band_rows=2)),
}


def check_norm_launches() -> None:
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    for dtype, (m, n), offset in itertools.product(dtypes, ((1, 48), (5, 40)), (0, 1)):
        x, dy, r, w = tensors(m, n, dtype, offset)
        for path, is_rms, has_w, has_b, has_r, store in itertools.product(
                PATHS, (False, True), (False, True), (False, True), (False, True), (None, "same", "fp32")):
            if is_rms and has_b:
                continue
            r_dtype = None if store is None else (dtype if store == "same" else torch.float32)
            with table.forced(**PATHS[path]):
                launch.norm_forward(x, r if has_r else None, w if has_w else None, w if has_b else None,
                                    1e-5, is_rms, r_dtype)
        _, _, mean, rstd = launch.norm_forward(x, None, w, w, 1e-5, False, None)
        for path, is_rms, has_w, need_dw, has_b, has_dres in itertools.product(
                BACKWARD_PATHS, (False, True), (False, True), (False, True), (False, True), (False, True)):
            if (is_rms and has_b) or (need_dw and not has_w):
                continue
            with table.forced(**BACKWARD_PATHS[path]):
                launch.norm_backward(dy, x, r if has_dres else None, None if is_rms else mean, rstd,
                                     w if has_w else None, dtype if has_b else None, is_rms, need_dw)
        for path in BACKWARD_PATHS:  # the offset gain (1 + weight), a float constexpr
            with table.forced(**PATHS.get(path, PATHS["chunked"])):
                launch.norm_forward(x, None, w, None, 1e-6, True, None, 1.0)
                launch.norm_forward(x, None, w, None, 1e-6, True, None, 0.0, True)  # Llama's rounding order
            with table.forced(**BACKWARD_PATHS[path]):
                launch.norm_backward(dy, x, None, None, rstd, w, None, True, True, 1.0)


def check_specialization_edges() -> None:
    """Integers and addresses at the edges of what Triton specializes on, one after another on the
    same kernel: a key that merged two of them would launch the wrong compiled kernel."""
    kernel = direct.DirectKernel(launch.norm.norm_bwd_row_sums_kernel)
    base = torch.randn(64)
    values = (0, 1, 2, 15, 16, 17, 32, 2**31 - 16, 2**31 - 1, 2**31, 2**32, 2**63 - 16, 2**63, -1, -16, -2**31)
    for value, offset in itertools.product(values, (0, 1, 4)):
        t = base[offset:]
        kernel.launch((1,), t, t, t, t, t, t, t, value, 1, value, value,
                      BLOCK_M=1, BLOCK_N=16, IS_RMS=False, HAS_WEIGHT=True, num_warps=4)


def check_hooks_take_tritons_path() -> None:
    """With a launch hook installed, every launch goes through Triton (which calls the hook)."""
    hooks = direct._HOOKS
    seen = []

    def hook(*_):
        seen.append(1)

    kernel = direct.DirectKernel(launch.norm.sum_partials_kernel)
    t = torch.randn(32)
    args = (t, t, t, t, 2, 32)
    constexprs = dict(HAS_WEIGHT=True, HAS_BIAS=True, BLOCK_P=2, BLOCK_N=16, num_warps=4)
    _direct_launch(kernel, (2,), *args, **constexprs)  # the key is known from here on
    saved = hooks.launch_enter_hook
    if hasattr(saved, "add"):  # Triton 3.5 on: a chain of hooks
        saved.add(hook)
    else:
        hooks.launch_enter_hook = hook
    try:
        before = triton_runs[0]
        _direct_launch(kernel, (2,), *args, **constexprs)
        if triton_runs[0] != before + 1:
            raise Mismatch("a launch hook is installed, yet the launch skipped Triton's path")
    finally:
        if hasattr(saved, "remove"):
            saved.remove(hook)
        else:
            hooks.launch_enter_hook = saved
    before = triton_runs[0]
    _direct_launch(kernel, (2,), *args, **constexprs)
    if triton_runs[0] != before:
        raise Mismatch("the hook is gone, yet the launch still went through Triton's path")


def host_us(fn, calls: int = 2000) -> float:
    for _ in range(calls // 10):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def time_host_paths() -> None:
    """Host microseconds per call, Triton's path against the direct one, with the launcher a no-op
    (so what remains is Python: binding and key on one side, our key and lookup on the other)."""
    from layernorm.kernels import ops

    RecordingKernel._launch = lambda self, *args: None
    for m, n in ((8, 1024), (8, 4096)):
        x = torch.randn(m, n, requires_grad=True)
        w = torch.randn(n, requires_grad=True)
        b = torch.randn(n, requires_grad=True)
        dy = torch.randn(m, n)
        xd, wd, bd = x.detach(), w.detach(), b.detach()
        _, _, mean, rstd = launch.norm_forward(xd, None, wd, bd, 1e-5, False, None)
        cases = {
            "launch.norm_forward": lambda: launch.norm_forward(xd, None, wd, bd, 1e-5, False, None),
            "launch.norm_backward (2 launches)": lambda: launch.norm_backward(dy, xd, None, mean, rstd, wd, bd.dtype,
                                                                              False),
            "layer_norm forward, no grad": lambda: ops.triton_layer_norm(xd, (n,), wd, bd, 1e-5),
            "layer_norm forward + backward": lambda: ops.triton_layer_norm(x, (n,), w, b, 1e-5).backward(dy),
        }
        print(f"host us per call, M={m} N={n} float32, stubbed launcher (Triton {triton.__version__}, "
              f"torch {torch.__version__}):")
        for name, fn in cases.items():
            figures = []
            for enabled in (False, True):
                direct.ENABLED = enabled
                figures.append(host_us(fn))
            print(f"  {name:<36} Triton's path {figures[0]:7.1f}   direct {figures[1]:7.1f}")


def main() -> int:
    driver.set_active(FakeDriver())
    triton.compiler.compile = fake_compile
    if "--time" in sys.argv:
        time_host_paths()
        return 0
    JITFunction.run = counting_run
    direct.DirectKernel.launch = shadow_launch
    direct.ENABLED = True
    try:
        check_norm_launches()
        check_specialization_edges()
        check_hooks_take_tritons_path()
    except Mismatch as exc:
        print(f"FAILED on Triton {triton.__version__}: {exc}")
        return 1
    print(f"ok: {LAUNCHES[0]} launches matched Triton {triton.__version__}'s own path "
          f"({len(COMPILED)} specializations compiled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
