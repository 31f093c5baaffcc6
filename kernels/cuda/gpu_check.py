"""One-shot GPU check of the CUDA backend: smoke against the reference, then bandwidth.

    python kernels/cuda/gpu_check.py            # needs fkdiff installed with FKDIFF_CUDA=ON

Prints one line per check; exits non-zero on the first smoke failure. Timings: CUDA events,
median of 10, L2 flushed (256 MB write) before each run; "eff" = minimum bytes / time divided by
the measured device-to-device copy bandwidth (2 * bytes / time of a 1 GiB clone).
"""

from __future__ import annotations

import math
import sys

import torch

from fkdiff import _C, ops
from fkdiff.ops import _backend_cuda as cb
from fkdiff.ops import reference as ref

dev = torch.device("cuda")
print("device:", torch.cuda.get_device_name(), "| _C.cuda_device_count() =", _C.cuda_device_count())
flags = torch.zeros(1, dtype=torch.int32, device=dev)


def check(name, ok):
    print(("ok   " if ok else "FAIL ") + name)
    if not ok:
        sys.exit(1)


# ---- smoke ---------------------------------------------------------------------------------
out = torch.empty(37, 4, dtype=torch.int32, device=dev)
exp = torch.empty(37, 4, dtype=torch.int32)
for seed, ctr in ((0, 0), (2**64 - 1, 2**64 - 5)):
    cb.philox(out, seed, ctr)
    ref.philox(exp, seed, ctr)
    check(f"philox seed={seed}", torch.equal(out.cpu(), exp))
for off in (0, 3, 2**64 - 6):
    z = torch.empty(100_003, device=dev)
    cb.normal(z, 7, off)
    err = (z.cpu().double() - ref.normal_like_counter(7, off, 100_003)).abs().max().item()
    check(f"normal offset={off} err={err:.2e}", err < 1e-5)
for dtype in (torch.float32, torch.float64):
    for N in (1, 5, 2048, 2049, 100_000):
        lw = (2 * torch.randn(3, N, dtype=torch.float64)).to(dtype)
        lw[1, ::3] = -math.inf
        lw[1, 0] = 0.0
        u = torch.rand(3, dtype=torch.float64)
        a = torch.empty(3, N, dtype=torch.int64, device=dev)
        x = torch.randn(3, N, 4, dtype=dtype)
        rows = torch.empty(3, N, 4, dtype=dtype, device=dev)
        cb.resample(lw.to(dev), a, flags, u=u.to(dev), x=x.to(dev), rows=rows)
        e = torch.empty(3, N, dtype=torch.int64)
        ref.resample(lw.double(), e, torch.zeros(1, dtype=torch.int32), u=u)
        mism = int((a.cpu() != e).sum())
        gathered = torch.equal(rows.cpu(), torch.gather(x, 1, a.cpu()[:, :, None].expand(3, N, 4)))
        check(f"resample {dtype} N={N} mismatches={mism} rows_ok={gathered}", mism <= 2 and gathered)
        st = torch.empty(3, 3, dtype=torch.float64, device=dev)
        cb.logsumexp_stats(lw.to(dev), st, flags)
        se = torch.empty(3, 3, dtype=torch.float64)
        ref.logsumexp_stats(lw.double(), se, torch.zeros(1, dtype=torch.int32))
        check(f"logsumexp_stats {dtype} N={N}", torch.allclose(st.cpu(), se, rtol=1e-12, atol=0))
check("flags clean", int(flags.item()) == 0)

# ---- bandwidth -----------------------------------------------------------------------------
flush = torch.empty(256 * 2**20, dtype=torch.uint8, device=dev)


def timed(fn, reps=10):
    ts = []
    for _ in range(reps):
        flush.fill_(1)
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        ts.append(s.elapsed_time(e) * 1e-3)
    return sorted(ts)[len(ts) // 2]


big = torch.empty(2**30, dtype=torch.uint8, device=dev)
copy_bw = 2 * big.numel() / timed(lambda: big.clone())
del big
print(f"d2d copy bandwidth: {copy_bw / 1e9:.0f} GB/s")


def report(name, t, nbytes):
    print(f"{name:44s} {t * 1e6:9.1f} us  {nbytes / t / 1e9:7.0f} GB/s  eff {nbytes / t / copy_bw:5.2f}")


for N, d in ((10**7, 4), (64, 3 * 256 * 256)):
    s = 4
    x = torch.randn(1, N, d, device=dev)
    g = torch.randn(1, N, d, device=dev)
    o = torch.empty_like(x)
    lw = torch.randn(1, N, device=dev)
    anc = torch.empty(1, N, dtype=torch.int64, device=dev)
    u = torch.rand(1, dtype=torch.float64, device=dev)
    K = torch.full((1, d), 0.3, device=dev)
    pot = torch.empty(1, N, device=dev)
    tag = f"N={N} d={d}"
    report(f"resample_rows {tag}", timed(lambda: cb.resample(lw, anc, flags, u=u, x=x, rows=o)), 2 * N * d * s + 8 * N)
    report(f"resample {tag}", timed(lambda: cb.resample(lw, anc, flags, u=u)), 4 * N + 8 * N)
    st = torch.empty(1, 3, dtype=torch.float64, device=dev)
    report(f"logsumexp_stats {tag}", timed(lambda: cb.logsumexp_stats(lw, st, flags)), 4 * N)
    report(f"gaussian_potential {tag}", timed(lambda: cb.gaussian_potential(x, K, K, K, pot, flags, accumulate=False)),
           N * d * s + 4 * N)
    anc.copy_(torch.arange(N, device=dev)[None])
    report(f"mutation {tag}", timed(lambda: cb.mutation(x, anc, K, K, K, 1, 0, o, flags)), 2 * N * d * s)
    three = 3 * N * d * s if d <= 1024 else 4 * N * d * s
    report(f"tamed_langevin {tag}", timed(lambda: cb.tamed_langevin(x, g, 0.01, 1, 0, o, flags)), three)
    zz = torch.empty(N * d, device=dev)
    report(f"normal n={N * d}", timed(lambda: cb.normal(zz, 1, 0)), N * d * s)
print("flags after benchmarks:", int(flags.item()))
