"""``layernorm check``: every implementation on every device against two float64 oracles.

For each operation (layer_norm, rms_norm), device, implementation, dtype and
shape of a small sweep, it runs the forward and the backward (autograd) of
the implementation in that dtype and compares the output and every gradient
with the annotated reference evaluated in float64 on the same values, and
with PyTorch's own op (``F.layer_norm`` / ``F.rms_norm`` and its autograd)
in float64: we claim to be a drop-in, so PyTorch's behaviour is an oracle
too, not only our reference. The error of one case against one oracle is the
largest over its outputs of::

    max |out - ref| / max(max |ref|, 1)

and the case passes when that is within the dtype's tolerance. The inputs
make every output O(1) or larger, so the floor of 1 changes nothing but for a
reference of exact zeros (dx when N = 1, where y = bias whatever x is): that
is judged by its absolute error. The exit status
is 1 when any case fails.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

from .. import reference
from ..functional import available_impls, layer_norm, rms_norm

# Tolerance on the normwise error above: a few hundred units of roundoff of the
# dtype, which leaves room for sums over thousands of elements in the gradients.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}
DTYPE_NAMES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# (input shape, normalized_shape): N = 1, odd, prime, a power of two, a
# transformer width, several normalized dims, several leading dims.
SHAPES: Tuple[Tuple[Tuple[int, ...], Tuple[int, ...]], ...] = (
    ((5, 1), (1,)),
    ((7, 33), (33,)),
    ((3, 4, 97), (97,)),
    ((16, 256), (256,)),
    ((8, 768), (768,)),
    ((6, 4, 24), (4, 24)),
)
OPS = ("layer_norm", "rms_norm")


@dataclass
class CaseResult:
    op: str
    impl: str
    device: str
    dtype: str
    shape: str
    error: float  # against the reference
    tolerance: float
    torch_error: float = 0.0  # against PyTorch's op

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance and self.torch_error <= self.tolerance  # False for NaN

    @property
    def verdict(self) -> str:
        return "ok" if self.passed else "FAIL"


def relative_error(out: Optional[torch.Tensor], ref: Optional[torch.Tensor]) -> float:
    """The normwise error above; NaN when either side is missing or holds a NaN."""
    if out is None or ref is None:
        return 0.0 if out is None and ref is None else float("nan")
    if out.shape != ref.shape:
        return float("nan")
    if ref.numel() == 0:
        return 0.0
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    scale = ref.abs().max().clamp_min(1.0)
    return float((out - ref).abs().max() / scale)


def _random_case(shape, ns, dtype, device, generator):
    """x = 0.5 randn - 2.3 (an offset mean, never zeros), random gain, bias and dy."""
    def randn(*size):
        return torch.randn(*size, generator=generator, dtype=torch.float64)

    x = 0.5 * randn(*shape) - 2.3
    weight, bias, dy = randn(*ns), randn(*ns), randn(*shape)
    return [t.to(device=device, dtype=dtype) for t in (x, weight, bias, dy)]


def _reference_float64(op, x, ns, weight, bias, dy, eps):
    x, weight, bias, dy = (t.double().cpu() for t in (x, weight, bias, dy))
    if op == "layer_norm":
        y, mean, rstd = reference.layer_norm_forward(x, ns, weight, bias, eps)
        return (y,) + reference.layer_norm_backward(dy, x, weight, mean, rstd)
    y, rstd = reference.rms_norm_forward(x, ns, weight, eps)
    return (y,) + reference.rms_norm_backward(dy, x, weight, rstd)


def _torch_float64(op, x, ns, weight, bias, dy, eps):
    """PyTorch's op and its autograd in float64 on the CPU: (y, dx, dweight[, dbias])."""
    leaves = [t.detach().double().cpu().requires_grad_() for t in (x, weight, bias)]
    x_, w_, b_ = leaves
    if op == "layer_norm":
        y = torch.nn.functional.layer_norm(x_, ns, w_, b_, eps)
    else:
        y = torch.nn.functional.rms_norm(x_, ns, w_, eps)
    y.backward(dy.double().cpu())
    return (y, x_.grad, w_.grad) + ((b_.grad,) if op == "layer_norm" else ())


def _max_error(got, expected) -> float:
    errors = [relative_error(o, r) for o, r in zip(got, expected)]
    # max() would let a NaN hide behind a later finite error; a NaN must fail.
    return float("nan") if any(math.isnan(e) for e in errors) else max(errors)


def _run_impl(op, impl, x, ns, weight, bias, dy, eps):
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    x_, w_, b_ = leaves
    if op == "layer_norm":
        y = layer_norm(x_, ns, w_, b_, eps, impl=impl)
        y.backward(dy)
        return y, x_.grad, w_.grad, b_.grad
    y = rms_norm(x_, ns, w_, eps, impl=impl)
    y.backward(dy)
    return y, x_.grad, w_.grad


def run_case(op, impl, device, dtype, shape, ns, generator, eps=1e-5) -> CaseResult:
    x, weight, bias, dy = _random_case(shape, ns, dtype, device, generator)
    got = _run_impl(op, impl, x, ns, weight, bias, dy, eps)
    error = _max_error(got, _reference_float64(op, x, ns, weight, bias, dy, eps))
    torch_error = _max_error(got, _torch_float64(op, x, ns, weight, bias, dy, eps))
    dtype_name = str(dtype).replace("torch.", "")
    return CaseResult(op, impl, str(device), dtype_name, f"{list(shape)}/{list(ns)}", error, TOLERANCE[dtype],
                      torch_error)


def _impl_takes(impl: str, device: str, dtype: torch.dtype) -> bool:
    # The Triton kernels cover float16/bfloat16/float32; float64 stays on torch's op.
    return not (impl == "triton" and dtype == torch.float64)


def run_sweep(
    devices: Iterable[str],
    dtypes: Sequence[torch.dtype],
    impls: Optional[Sequence[str]] = None,
    shapes=SHAPES,
    seed: int = 0,
) -> List[CaseResult]:
    generator = torch.Generator().manual_seed(seed)
    results = []
    for device in devices:
        device_impls = [i for i in available_impls(device) if impls is None or i in impls]
        for op in OPS:
            for impl in device_impls:
                for dtype in dtypes:
                    if not _impl_takes(impl, device, dtype):
                        continue
                    for shape, ns in shapes:
                        results.append(run_case(op, impl, device, dtype, shape, ns, generator))
    return results


def format_table(results: Sequence[CaseResult]) -> str:
    header = ("op", "implementation", "device", "dtype", "shape/normalized", "error vs reference",
              "error vs torch", "tolerance", "verdict")
    rows = [header] + [
        (r.op, r.impl, r.device, r.dtype, r.shape, f"{r.error:.2e}", f"{r.torch_error:.2e}", f"{r.tolerance:.0e}",
         r.verdict)
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def default_devices() -> List[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", action="append", help="device to check (repeatable); default: cpu and cuda if present")
    parser.add_argument("--dtype", action="append", choices=sorted(DTYPE_NAMES), help="dtype to check (repeatable); default: all")
    parser.add_argument("--impl", action="append", choices=("torch", "reference", "triton"), help="implementation (repeatable); default: every available one")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    devices = args.device or default_devices()
    dtypes = [DTYPE_NAMES[d] for d in args.dtype] if args.dtype else list(DTYPE_NAMES.values())
    results = run_sweep(devices, dtypes, args.impl, seed=args.seed)
    print(format_table(results))
    failed = [r for r in results if not r.passed]
    print(f"\n{len(results) - len(failed)} of {len(results)} cases passed" + (f", {len(failed)} FAILED" if failed else ""))
    return 1 if failed else 0
