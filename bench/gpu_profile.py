"""Per-kernel device times of each fkdiff op on a GPU (torch.profiler), to see where time goes.

    python bench/gpu_profile.py [--backends cuda triton]

For each op at (N = 1e7, d = 4) and (N = 64, d = 3 x 256 x 256), float32: runs it a few times
under torch.profiler and prints the CUDA kernels it launched with their mean device time.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from fkdiff import ops


def cases(N, d, backend):
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(1, N, d, device=dev, generator=g)
    lw = 0.5 * torch.randn(1, N, device=dev, generator=g)
    rows, anc = torch.empty_like(x), torch.empty(1, N, dtype=torch.int32, device=dev)
    anc_sorted = torch.sort(torch.randint(0, N, (1, N), device=dev, generator=g)).values.to(torch.int32)
    out = torch.empty_like(x)
    pot = torch.empty(1, N, device=dev)
    t, v = torch.randn(d, device=dev), torch.rand(d, device=dev) + 0.5
    K, c, s = torch.rand(d, device=dev), torch.randn(d, device=dev), torch.rand(d, device=dev)
    flags = ops.new_flags(dev)
    return {
        "resample_rows": lambda: ops.resample_rows(x, lw, u=0.3, out=rows, ancestors_out=anc, backend=backend, flags=flags),
        "potential": lambda: ops.gaussian_log_potential(x, t, v, out=pot, backend=backend, flags=flags),
        "mutation": lambda: ops.auxiliary_mutation(x, K, c, s, ancestors=anc_sorted, seed=1, out=out, backend=backend, flags=flags),
        "langevin": lambda: ops.tamed_langevin(x, x, 0.01, seed=1, out=out, backend=backend, flags=flags),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", nargs="+", default=["cuda", "triton"])
    args = parser.parse_args(argv)
    for backend in args.backends:
        for N, d in ((10_000_000, 4), (64, 3 * 256 * 256)):
            for name, fn in cases(N, d, backend).items():
                for _ in range(3):
                    fn()
                torch.cuda.synchronize()
                reps = 5
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(reps):
                        fn()
                    torch.cuda.synchronize()
                kernels = {}
                for ev in prof.events():
                    if ev.device_type == torch.autograd.DeviceType.CUDA:
                        kernels.setdefault(ev.name, []).append(ev.device_time if hasattr(ev, "device_time") else ev.cuda_time)
                total = sum(sum(v) for v in kernels.values()) / reps
                print(f"{backend:6s} {name:14s} N={N:<9d} d={d:<7d} device total {total / 1e3:8.3f} ms")
                for kname, times in sorted(kernels.items(), key=lambda kv: -sum(kv[1])):
                    print(f"        {sum(times) / reps / 1e3:8.3f} ms  x{len(times) // reps}  {kname[:110]}")
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
