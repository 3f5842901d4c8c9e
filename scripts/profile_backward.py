"""Where the time of one LayerNorm backward goes: kernel durations from torch.profiler.

    PYTHONPATH=. python3 scripts/profile_backward.py
"""

import torch
from torch.profiler import ProfilerActivity, profile

import layernorm

for m, n in ((8, 4096), (512, 4096), (32768, 1024), (32768, 8192)):
    x = (0.5 * torch.randn(m, n, device="cuda") - 2.3).bfloat16().requires_grad_()
    w = torch.randn(n, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(n, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dy = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    for impl in ("triton", "torch"):
        y = layernorm.layer_norm(x, n, w, b, impl=impl)
        for _ in range(5):
            y.backward(dy, retain_graph=True)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                y.backward(dy, retain_graph=True)
            torch.cuda.synchronize()
        print(f"\n=== backward {impl} M={m} N={n} (10 calls)")
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=6, max_name_column_width=60))
