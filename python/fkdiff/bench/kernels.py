"""Kernel benchmark: fkdiff's front door vs plain PyTorch vs a memory copy, on one device.

Run ``fkdiff bench kernels`` or ``python -m fkdiff.bench.kernels`` (``--help`` lists the options).
For each kernel, backend and shape ``(N, d)`` (one population, B = 1) it times, interleaved
(ours, torch, copy, ours, torch, copy, ...) so that machine noise hits all three alike:

* **ours**: the :mod:`fkdiff.ops` call with every output preallocated (``out=``);
* **torch**: the plain PyTorch sequence a user would write for the same result;
* **copy**: ``dst.copy_(src)`` with ``src`` and ``dst`` each half of the kernel's minimum bytes
  (a copy reads and writes), the floor the kernel is measured against.

Minimum bytes (``s`` = bytes per element of the particles, int32 ancestors):

==========  ==============================================================================
resample    ``2 N d s + N s + 4 N``  (read x rows, write rows, read log-weights, write
            ancestors; ``2 N d s + 8 N`` in float32)
potential   ``N d s + N s``  (read x once, write the log-potential; ``m = d``)
mutation    ``2 N d s``  (parents read through the ancestors + output written; the issue's
            ``3 N d s`` assumed a separate resampled input and is reported as
            ``gbps_issue_formula``)
langevin    ``3 N d s`` when a row fits on chip (GPU: ``d s <= 48 KiB``; CPU: always), else
            ``4 N d s`` (the gradient is read twice: norm pass, then update)
normal      ``n s`` with ``n = N d`` (a write of the normals)
variational ``9 N d s`` when a row fits on chip (read mu, log_std, m, g, xi; write mu, log_std,
            xi, sample), else ``14 N d s`` (the five inputs are read twice: norms, then update)
==========  ==============================================================================

Timing: CPU, ``time.perf_counter`` around each call; GPU, CUDA events around each call, after a
spin kernel that keeps the GPU busy while Python enqueues the call (twice its host enqueue time),
so the events time the kernels and the launch gaps between them, not Python's dispatch (the same
thing a CUDA-graph replay measures); the host enqueue time is reported beside it. Before
every timed call (excluded from its time) a cache flush writes and then reads a buffer of twice
the last-level cache (GPU: ``L2_cache_size``; CPU: the L3 size from sysfs), so inputs are not
cache-resident and no dirty flush lines are written back inside the timed call
(``--no-cold-l2`` turns it off). A few warm-up rounds, then the median of the repeats.
Reported: ``speedup = torch_ms / ours_ms``, ``gbps = min_bytes / ours``, ``floor_gbps`` (the
copy's bytes moved per second) and ``frac_of_copy = gbps / floor_gbps``.

Parents read through sorted ancestors: a parent drawn several times is read once, so for large
rows the true traffic is ``(k + N) d s`` with ``k`` distinct parents; the JSON gives
``distinct_parents``, ``bytes_distinct`` and ``gbps_distinct`` for resample and mutation.

A quick correctness check runs once per case before timing (``--no-check`` skips it): ancestors
against a float64 reference (a few boundary ties allowed), rows = ``x[ancestors]``, the potential
against float64, and the noise of mutation / Langevin / normal recovered from the output and
compared with :func:`fkdiff.ops.reference.normal_like_counter` (first 4096 elements) plus its
mean and standard deviation over the whole array.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

KERNELS = ("resample", "potential", "mutation", "langevin", "normal", "variational", "mixture")
#: kernels that only some backends have: ``mixture`` is the CPU pass of GaussianMixtureDenoiser
#: (csrc/KERNELS.md, outside the ops protocol)
ONLY_ON = {"mixture": ("cpu", "torch")}
#: kernels timed only on rows of at most this many coordinates (the mixture is a toy-problem denoiser)
MAX_D = {"mixture": 1000}
MIXTURE_K = 25  # components (the benchmark prior's)
DEFAULT_SHAPES = ((1_000_000, 4), (100_000, 100), (64, 3 * 256 * 256))
GPU_EXTRA_SHAPES = ((10_000_000, 4),)
QUICK_SHAPES = ((100_000, 4), (10_000, 100), (8, 3 * 64 * 64))
QUICK_GPU_EXTRA_SHAPES = ((1_000_000, 4),)

SEED = 20240611
U = 0.37  # the fixed systematic offset
GAMMA = 0.01  # Langevin step size
LOGW_SCALE = 0.5  # log-weights ~ N(0, LOGW_SCALE^2)
ON_CHIP_ROW_BYTES = 48 * 1024  # GPU: a row up to this size is held on chip (3 N d s Langevin)
NOISE_CHECK = 4096
DEFAULT_REPEATS = 15
MIN_REPEATS = 5
DEFAULT_CASE_BUDGET_S = 6.0


# --------------------------------------------------------------------------------------------
# Machine facts
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    mult = 1
    for suffix, factor in (("K", 1024), ("M", 1024**2), ("G", 1024**3)):
        if text.endswith(suffix):
            text, mult = text[:-1], factor
            break
    return int(text) * mult


def _cpu_llc_bytes() -> int:
    """The largest CPU cache (usually L3) from sysfs; 32 MiB when it cannot be read."""
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in os.listdir(base):
            if not entry.startswith("index"):
                continue
            try:
                with open(os.path.join(base, entry, "size")) as fh:
                    best = max(best, _parse_size(fh.read()))
            except (OSError, ValueError):
                continue
    except OSError:
        pass
    return best or 32 * 1024**2


def _gpu_l2_bytes() -> int:
    try:
        size = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0))
    except Exception:  # pragma: no cover - odd drivers
        size = 0
    return size or 50 * 1024**2


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def machine_info(device: str) -> dict:
    info = {
        "cpu": _cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    try:
        import fkdiff

        info["fkdiff"] = fkdiff.__version__
        from fkdiff import _C

        if hasattr(_C, "cpu_isa"):
            info["cpu_isa"] = _C.cpu_isa()
    except Exception:
        pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["l2_bytes"] = _gpu_l2_bytes()
    else:
        info["llc_bytes"] = _cpu_llc_bytes()
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        pass
    return info


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


def runnable(name: str) -> tuple[str | None, str]:
    """The device ``name`` runs on here, or ``(None, why not)``."""
    import fkdiff
    from fkdiff.ops import _backends

    status = fkdiff.backends()[name]
    if not status["built"]:
        return None, status["detail"]
    devices = status["devices"]
    if name == "cpu":
        device = "cpu"
    elif name == "cuda":
        device = "cuda"
    else:  # triton / torch: the GPU when there is one, else the CPU (triton: interpreter only)
        device = "cuda" if "cuda" in devices else "cpu"
    if device not in devices:
        return None, f"cannot run {device} tensors here ({status['detail']})"
    try:
        _backends._module(name)
    except Exception as exc:  # not written yet, or a broken build
        return None, f"fkdiff.ops backend module for {name!r} does not import: {exc}"
    return device, ""


def default_backends() -> list[str]:
    """Every compiled / Triton backend that can run here at speed (Triton's CPU interpreter is
    left out); the torch reference only when none can."""
    chosen = []
    for name in ("cpu", "cuda", "triton"):
        device, _ = runnable(name)
        if device is None or (name == "triton" and device != "cuda"):
            continue
        chosen.append(name)
    return chosen


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    ours: Callable[[], object]
    torch: Callable[[], object]
    min_bytes: int
    formula: str
    check: Callable[[], tuple[bool, str]]
    extra: dict = field(default_factory=dict)


def _noise_check(z: torch.Tensor, tol: float) -> tuple[bool, str]:
    """``z``: recovered float64 noise, flattened in element-counter order (offset 0)."""
    from fkdiff.ops import reference

    z = z.reshape(-1)
    k = min(NOISE_CHECK, z.numel())
    ref = reference.normal_like_counter(SEED, 0, k, device=z.device)
    err = (z[:k] - ref).abs().max().item() if k else 0.0
    finite = bool(torch.isfinite(z).all())
    mean = z.mean().item()
    std = z.std().item() if z.numel() > 1 else 1.0
    n = z.numel()
    mean_tol = max(0.01, 6.0 / math.sqrt(n))
    std_tol = max(0.01, 6.0 / math.sqrt(n))
    ok = finite and err <= tol and abs(mean) <= mean_tol and abs(std - 1.0) <= std_tol
    return ok, f"z err {err:.1e}, mean {mean:+.3f}, std {std:.3f}" + ("" if finite else ", NON-FINITE")


def _build_resample(N, d, dtype, device, backend) -> Case:
    from fkdiff import ops

    s = torch.finfo(dtype).bits // 8
    x = torch.randn(N, d, dtype=dtype, device=device)
    # sigma 0.5: ESS ~ 0.78 N, so most parents are read once and 2Nds is close to the true
    # traffic (a duplicated parent is read once; see distinct_parents in the JSON).
    lw = LOGW_SCALE * torch.randn(N, dtype=dtype, device=device)
    rows = torch.empty_like(x)
    anc = torch.empty(N, dtype=torch.int32, device=device)

    distinct = [None]

    def ours():
        ops.resample_rows(x, lw, u=U, out=rows, ancestors_out=anc, backend=backend)

    def plain():
        w = torch.softmax(lw, -1)
        c = torch.cumsum(w, -1)
        pos = (torch.arange(N, device=device, dtype=lw.dtype) + U) / N
        a = torch.searchsorted(c, pos, right=True).clamp_(max=N - 1)
        return x.index_select(0, a)

    def check():
        ours()
        lw64 = lw.to(torch.float64)
        c = torch.cumsum(torch.exp(lw64 - lw64.max()), 0)
        q = (torch.arange(N, dtype=torch.float64, device=device) + U) / N
        ref = torch.searchsorted(c / c[-1], q, right=True).clamp_(max=N - 1)
        a64 = anc.to(torch.int64)
        differ = int((a64 != ref).sum())
        in_range = bool(((a64 >= 0) & (a64 < N)).all())
        if not in_range:
            return False, "ancestors out of range"
        ordered = bool((a64[1:] >= a64[:-1]).all()) if N > 1 else True
        gathered = torch.equal(rows, x.index_select(0, a64))
        ok = ordered and gathered and differ <= max(4, int(2e-3 * N))
        distinct[0] = int(torch.unique_consecutive(a64).numel())
        msg = f"anc differ {differ}/{N}" + ("" if ordered else ", UNSORTED") + ("" if gathered else ", ROWS != x[anc]")
        return ok, msg

    case = Case(ours, plain, 2 * N * d * s + N * s + 4 * N, "2Nds+Ns+4N", check)
    case.extra["distinct"] = lambda: None if distinct[0] is None else (
        distinct[0], (distinct[0] + N) * d * s + N * s + 4 * N)
    return case


def _build_potential(N, d, dtype, device, backend) -> Case:
    from fkdiff import ops

    s = torch.finfo(dtype).bits // 8
    x = torch.randn(N, d, dtype=dtype, device=device)
    t = torch.randn(d, dtype=dtype, device=device)
    a = torch.rand(d, dtype=dtype, device=device) + 0.5
    v = torch.rand(d, dtype=dtype, device=device) + 0.5
    out = torch.empty(N, dtype=dtype, device=device)

    def ours():
        ops.gaussian_log_potential(x, t, v, scale=a, out=out, backend=backend)

    def plain():
        return -(((t - a * x) ** 2) / (2 * v)).sum(-1)

    def check():
        ours()
        x64 = x.to(torch.float64)
        ref = -(((t.double() - a.double() * x64) ** 2) / (2 * v.double())).sum(-1)
        del x64
        rel = ((out.double() - ref).abs() / (ref.abs() + 1.0)).max().item()
        tol = 2e-4 if dtype == torch.float32 else 1e-10
        return rel <= tol, f"rel err {rel:.1e}"

    return Case(ours, plain, N * d * s + N * s, "Nds+Ns", check)


def _build_mutation(N, d, dtype, device, backend) -> Case:
    from fkdiff import ops

    s = torch.finfo(dtype).bits // 8
    m = torch.randn(N, d, dtype=dtype, device=device)
    anc64 = torch.randint(0, N, (N,), device=device).sort().values
    anc = anc64.to(torch.int32)
    K = torch.rand(d, dtype=dtype, device=device)
    c = torch.randn(d, dtype=dtype, device=device)
    sc = torch.rand(d, dtype=dtype, device=device) * 0.5 + 0.5
    out = torch.empty(N, d, dtype=dtype, device=device)

    def ours():
        ops.auxiliary_mutation(m, K, c, sc, ancestors=anc, seed=SEED, offset=0, out=out, backend=backend)

    def plain():
        return K * c + (1 - K) * m[anc64] + sc * torch.randn_like(out)

    def check():
        ours()
        K64, c64, s64 = K.double(), c.double(), sc.double()
        z = out.double()
        z -= K64 * c64
        z -= (1 - K64) * m.index_select(0, anc64).double()
        z /= s64
        return _noise_check(z, 1e-4 if dtype == torch.float32 else 2e-5)

    issue = 3 * N * d * s
    k = int(torch.unique_consecutive(anc64).numel())
    return Case(ours, plain, 2 * N * d * s, "2Nds", check,
                {"issue_bytes": issue, "distinct": lambda: (k, (k + N) * d * s)})


def _build_langevin(N, d, dtype, device, backend) -> Case:
    from fkdiff import ops

    s = torch.finfo(dtype).bits // 8
    x = torch.randn(N, d, dtype=dtype, device=device)
    G = torch.randn(N, d, dtype=dtype, device=device)
    out = torch.empty_like(x)
    g = GAMMA

    def ours():
        ops.tamed_langevin(x, G, g, seed=SEED, offset=0, out=out, backend=backend)

    def plain():
        return x + g * G / (1 + g * G.norm(dim=-1, keepdim=True)) + (2 * g) ** 0.5 * torch.randn_like(x)

    def check():
        ours()
        G64 = G.double()
        z = out.double()
        z -= x.double()
        z -= g * G64 / (1 + g * G64.norm(dim=-1, keepdim=True))
        del G64
        z /= (2 * g) ** 0.5
        return _noise_check(z, 2e-4 if dtype == torch.float32 else 2e-5)

    on_chip = device == "cpu" or d * s <= ON_CHIP_ROW_BYTES
    passes = 3 if on_chip else 4
    return Case(ours, plain, passes * N * d * s, f"{passes}Nds", check)


def _build_normal(N, d, dtype, device, backend) -> Case:
    from fkdiff import ops

    s = torch.finfo(dtype).bits // 8
    n = N * d
    buf = torch.empty(n, dtype=dtype, device=device)
    buf2 = torch.empty(n, dtype=dtype, device=device)

    def ours():
        ops.normal(n, seed=SEED, offset=0, out=buf, backend=backend)

    def plain():
        torch.randn(n, out=buf2)

    def check():
        ours()
        return _noise_check(buf.double(), 2e-5)

    return Case(ours, plain, n * s, "ns (n=Nd)", check)


def _build_variational(N, d, dtype, device, backend) -> Case:
    from fkdiff import ops

    s = torch.finfo(dtype).bits // 8
    mu, m, G = (torch.randn(N, d, dtype=dtype, device=device) for _ in range(3))
    ls = torch.full((N, d), -1.0, dtype=dtype, device=device)
    xi = torch.randn(N, d, dtype=dtype, device=device)
    sample = torch.empty_like(mu)
    var, lr_mu, lr_l = 0.1, 0.1, 0.01  # small steps: repeated calls keep the state finite

    def ours():
        ops.variational_update(mu, ls, m, G, xi, var, lr_mu, lr_l, seed=SEED, offset=0, sample=sample, backend=backend)

    def plain():  # DCPS's unfused chain (two normalised steps, then a fresh draw)
        std = torch.exp(ls)
        gm = (mu - m) - var * G
        gl = std * std - var - var * G * std * xi
        new_mu = mu - lr_mu * gm / gm.norm(dim=-1, keepdim=True)
        new_ls = ls - lr_l * gl / gl.norm(dim=-1, keepdim=True)
        z = torch.randn_like(mu)
        return new_mu + torch.exp(new_ls) * z

    def check():
        ours()
        gap = (sample.double() - mu.double() - torch.exp(ls.double()) * xi.double()).abs().max().item()
        ok, msg = _noise_check(xi.double(), 2e-5)
        return ok and gap < 1e-4, f"{msg}; sample - (mu + std xi) max {gap:.1e}"

    on_chip = d < 512 if device == "cpu" else d * s <= ON_CHIP_ROW_BYTES
    passes = 9 if on_chip else 14
    return Case(ours, plain, passes * N * d * s, f"{passes}Nds", check)


def _build_mixture(N, d, dtype, device, backend) -> Case:
    from fkdiff.diffusion import GaussianMixtureDenoiser, linear_schedule

    s = torch.finfo(dtype).bits // 8
    g = torch.Generator().manual_seed(SEED)
    means = 8 * torch.randn(MIXTURE_K, d, generator=g, dtype=torch.float64)
    den = GaussianMixtureDenoiser(means, torch.rand(MIXTURE_K, generator=g, dtype=torch.float64) + 0.1, linear_schedule(1000))
    t = 300
    abar = float(den.alphas_cumprod[t])
    a, c = math.sqrt(abar), 1.0 - abar
    x = (3 * torch.randn(N, d, generator=g)).to(dtype)
    out = torch.empty_like(x)
    mu = means.to(dtype)

    def plain():  # the PyTorch sequence (the denoiser's twin): logits GEMM, softmax, weighted-sum GEMM
        return torch.addmm(x, den.responsibilities(x, t), mu, beta=a, alpha=c)

    def ours():
        if backend == "torch":
            return plain()
        den._mixture_mean(x, t, a, c, out=out)

    def check():
        got = plain() if backend == "torch" else (ours(), out)[1]
        ref = torch.addmm(x.double(), den.responsibilities(x.double(), t), means, beta=a, alpha=c)
        scale = 1 + ref.abs().max().item()
        err = (got.double() - ref).abs().max().item() / scale
        base = (plain().double() - ref).abs().max().item() / scale  # the PyTorch sequence's own rounding
        ok = err <= 2 * base + (1e-12 if dtype == torch.float64 else 1e-6)
        return ok, f"max rel. error {err:.1e} vs float64 (PyTorch in {str(dtype)[6:]}: {base:.1e})"

    return Case(ours, plain, 2 * N * d * s, "2Nds", check)


BUILDERS = {
    "resample": _build_resample,
    "potential": _build_potential,
    "mutation": _build_mutation,
    "langevin": _build_langevin,
    "normal": _build_normal,
    "variational": _build_variational,
    "mixture": _build_mixture,
}


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


class Timer:
    """Times zero-argument callables on one device, with an optional cache flush before each."""

    def __init__(self, device: str, cold: bool):
        self.device = device
        self.cold = cold
        self.flush_buf = None
        if cold:
            size = 2 * (_gpu_l2_bytes() if device == "cuda" else _cpu_llc_bytes())
            self.flush_bytes = size
            self.flush_buf = torch.empty(size // 4, dtype=torch.float32, device=device)
        else:
            self.flush_bytes = 0
        self._flips = 0
        self._cycles_per_ms = None
        self._head_start_ms: dict[int, float] = {}

    def _calibrate_sleep(self) -> float:
        """GPU clock cycles per millisecond of ``torch.cuda._sleep`` (measured once)."""
        if self._cycles_per_ms is None:
            torch.cuda._sleep(1000)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.cuda._sleep(20_000_000)
            end.record()
            torch.cuda.synchronize()
            self._cycles_per_ms = 20_000_000 / max(start.elapsed_time(end), 1e-3)
        return self._cycles_per_ms

    def head_start(self, index: int) -> None:
        """Keep the GPU busy while the host enqueues the timed call, so the events measure the
        device time of its kernels and not Python's launch overhead (as a CUDA graph would):
        a spin kernel of twice the call's last host enqueue time (at least 0.2 ms)."""
        ms = max(0.2, 2.0 * self._head_start_ms.get(index, 0.5))
        torch.cuda._sleep(int(self._calibrate_sleep() * ms))

    def flush(self):
        if self.flush_buf is None:
            return
        # Write the buffer (evicts the inputs), then read it back (the dirty flush lines are
        # written back here, not inside the timed call).
        self._flips ^= 1
        self.flush_buf.fill_(float(self._flips))
        self.flush_buf.sum()

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def round(self, fns) -> tuple[list[float], list[float]]:
        """One interleaved round: device ms and host (enqueue) ms of each fn."""
        times, hosts = [], []
        if self.device == "cuda":
            events = []
            for index, fn in enumerate(fns):
                self.flush()
                self.head_start(index)
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                h0 = time.perf_counter()
                fn()
                h1 = time.perf_counter()
                end.record()
                events.append((start, end))
                hosts.append((h1 - h0) * 1e3)
                self._head_start_ms[index] = hosts[-1]
            torch.cuda.synchronize()
            times = [s.elapsed_time(e) for s, e in events]
        else:
            for fn in fns:
                self.flush()
                h0 = time.perf_counter()
                fn()
                h1 = time.perf_counter()
                times.append((h1 - h0) * 1e3)
                hosts.append(times[-1])
        return times, hosts

    def measure(self, fns, warmup: int, repeats: int, adaptive: bool, budget_s: float):
        """Medians (device ms, host ms) and minima (device ms) per fn, and the number of
        timed repeats."""
        for _ in range(warmup):
            t0 = time.perf_counter()
            self.round(fns)
            round_s = time.perf_counter() - t0
        if adaptive and warmup:
            fit = int(budget_s / max(round_s, 1e-9))
            repeats = max(min(repeats, MIN_REPEATS), min(repeats, fit))
        samples = [[] for _ in fns]
        host = [[] for _ in fns]
        for _ in range(repeats):
            times, hosts = self.round(fns)
            for i, (t, h) in enumerate(zip(times, hosts)):
                samples[i].append(t)
                host[i].append(h)
        medians = [statistics.median(s) for s in samples]
        return medians, [statistics.median(h) for h in host], [min(s) for s in samples], repeats


# --------------------------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------------------------


def _shape_text(N: int, d: int) -> str:
    def num(v):
        if v >= 1000:
            e = round(math.log10(v))
            if 10**e == v:
                return f"1e{e}"
        return str(v)

    return f"{num(N)}x{num(d)}"


def parse_shape(text: str) -> tuple[int, int]:
    """``"1e6x4"``, ``"100000x100"`` or ``"64x3*256*256"`` -> (N, d)."""
    try:
        left, right = text.lower().split("x")

        def value(part):
            prod = 1
            for p in part.split("*"):
                f = float(p)
                if f != int(f) or f < 1:
                    raise ValueError
                prod *= int(f)
            return prod

        return value(left), value(right)
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r}: expected NxD, e.g. 1e6x4 or 64x3*256*256") from None


def _free(device: str):
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def run_case(kernel, backend, device, N, d, dtype, timer, args, machine) -> dict:
    record = {
        "kernel": kernel,
        "backend": backend,
        "device": device,
        "shape": [N, d],
        "dtype": str(dtype).replace("torch.", ""),
    }
    case = None
    src = dst = None
    try:
        case = BUILDERS[kernel](N, d, dtype, device, backend)
        record["bytes"] = case.min_bytes
        record["bytes_formula"] = case.formula
        if args.check:
            try:
                ok, msg = case.check()
            except Exception as exc:
                ok, msg = False, f"check raised {type(exc).__name__}: {exc}"
            record["check_ok"], record["check"] = ok, msg
            _free(device)
        n_copy = max(1, case.min_bytes // 8)  # float32 elements in each of src and dst
        src = torch.ones(n_copy, dtype=torch.float32, device=device)
        dst = torch.empty_like(src)
        copy_bytes = 2 * n_copy * 4

        def copy():
            dst.copy_(src)

        medians, hosts, minima, reps = timer.measure(
            [case.ours, case.torch, copy], args.warmup, args.repeats, args.adaptive, args.case_budget
        )
        ours_ms, torch_ms, copy_ms = medians
        gbps = case.min_bytes / (ours_ms * 1e-3) / 1e9
        floor = copy_bytes / (copy_ms * 1e-3) / 1e9
        record.update(
            ours_ms=ours_ms,
            torch_ms=torch_ms,
            copy_ms=copy_ms,
            speedup=torch_ms / ours_ms,
            gbps=gbps,
            floor_gbps=floor,
            frac_of_copy=gbps / floor,
            ours_min_ms=minima[0],
            torch_min_ms=minima[1],
            copy_min_ms=minima[2],
            repeats=reps,
            warmup=args.warmup,
            cold_cache=timer.cold,
            flush_bytes=timer.flush_bytes,
        )
        if "issue_bytes" in case.extra:
            record["issue_bytes"] = case.extra["issue_bytes"]
            record["gbps_issue_formula"] = case.extra["issue_bytes"] / (ours_ms * 1e-3) / 1e9
        if "distinct" in case.extra and case.extra["distinct"]() is not None:
            k, bytes_k = case.extra["distinct"]()
            record["distinct_parents"] = k
            record["bytes_distinct"] = bytes_k
            record["gbps_distinct"] = bytes_k / (ours_ms * 1e-3) / 1e9
        if device == "cuda":
            record["ours_host_ms"], record["torch_host_ms"] = hosts[0], hosts[1]
            from fkdiff.ops import check_flags

            check_flags()  # a kernel that flagged bad values on the GPU fails the case here
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        del case, src, dst
        _free(device)
    record["machine"] = machine
    record["torch_version"] = torch.__version__
    record["threads"] = torch.get_num_threads()
    return record


def format_table(records: list[dict]) -> str:
    head = ("kernel", "backend", "device", "shape", "dtype", "ours ms", "torch ms", "speedup", "GB/s", "copy GB/s", "% copy", "check")
    rows = []
    for r in records:
        shape = _shape_text(*r["shape"])
        base = (r["kernel"], r["backend"], r["device"], shape, r.get("dtype", ""))
        if "error" in r:
            rows.append(base + ("ERROR", "", "", "", "", "", r["error"][:90]))
            continue
        check = r.get("check", "-")
        if "check_ok" in r and not r["check_ok"]:
            check = "FAIL: " + check
        host = ""
        if r["device"] == "cuda" and r.get("ours_host_ms", 0) > r["ours_ms"]:
            host = " (host-bound)"
        rows.append(
            base
            + (
                f"{r['ours_ms']:.3f}",
                f"{r['torch_ms']:.3f}",
                f"{r['speedup']:.2f}x",
                f"{r['gbps']:.1f}",
                f"{r['floor_gbps']:.1f}",
                f"{100 * r['frac_of_copy']:.0f}%",
                check + host,
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    right = {5, 6, 7, 8, 9, 10}

    def fmt(row):
        cells = []
        for i, (cell, w) in enumerate(zip(row, widths)):
            cells.append(str(cell).rjust(w) if i in right else str(cell).ljust(w))
        return "  ".join(cells).rstrip()

    lines = [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
    return "\n".join(lines)


TABLE_NOTE = """\
ours: fkdiff.ops front door, outputs preallocated; torch: the plain PyTorch sequence (fresh
temporaries); copy: dst.copy_(src) of the same bytes (floor). GB/s = minimum bytes / ours time:
resample 2Nds+Ns+4N (int32 ancestors), potential Nds+Ns (m = d), mutation 2Nds (parents read
through the ancestors + output written; the issue's 3Nds is in the JSON as gbps_issue_formula),
langevin 3Nds (4Nds on a GPU when a row exceeds 48 KiB), normal ns with n = Nd, variational
9Nds (14Nds for long rows), mixture 2Nds (K = 25 components; compute-bound: its % of copy is
not a target; CPU only, rows of at most 1000). Medians of interleaved repeats{cold}."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fkdiff bench kernels",
        description="Time fkdiff's kernels against plain PyTorch and a memory copy of the same bytes.",
    )
    p.add_argument(
        "--backends",
        nargs="+",
        choices=("cpu", "cuda", "triton", "torch"),
        help="backends to time as 'ours' (default: every compiled/Triton backend that runs here; "
        "the torch reference only if none does)",
    )
    p.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS))
    p.add_argument(
        "--shapes",
        nargs="+",
        type=parse_shape,
        help="shapes NxD (default 1e6x4 1e5x100 64x3*256*256, plus 1e7x4 on a GPU)",
    )
    p.add_argument("--quick", action="store_true", help="smaller shapes, 5 repeats, 1 warm-up")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--repeats", type=int, help=f"timed repeats per case (default {DEFAULT_REPEATS}; "
                   f"without this option, long cases are cut to fit --case-budget, never below {MIN_REPEATS})")
    p.add_argument("--warmup", type=int, help="warm-up rounds per case (default 2; --quick 1)")
    p.add_argument("--case-budget", type=float, default=DEFAULT_CASE_BUDGET_S,
                   help="seconds of timed rounds per case when --repeats is not given (default %(default)s)")
    p.add_argument("--cold-l2", dest="cold", action="store_true", default=True,
                   help="flush the last-level cache before every timed call (default)")
    p.add_argument("--no-cold-l2", dest="cold", action="store_false", help="time with warm caches")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the correctness checks")
    p.add_argument("--threads", type=int, help="torch.set_num_threads for the CPU runs")
    p.add_argument("--json", metavar="PATH", help="write the records as a JSON list")
    p.add_argument("--max-seconds", type=float,
                   help="start no new case after this many seconds (the table and JSON still come out)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.adaptive = args.repeats is None
    if args.repeats is None:
        args.repeats = MIN_REPEATS if args.quick else DEFAULT_REPEATS
    if args.repeats < 1:
        print("--repeats: expected at least 1", file=sys.stderr)
        return 2
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    dtype = getattr(torch, args.dtype)

    failures = 0
    plan: list[tuple[str, str]] = []  # (backend, device)
    if args.backends:
        for name in dict.fromkeys(args.backends):
            device, why = runnable(name)
            if device is None:
                print(f"skipping backend {name!r}: {why}", file=sys.stderr)
                failures += 1
            else:
                if name == "triton" and device == "cpu":
                    print("note: triton on CPU tensors runs in Triton's interpreter (slow)", file=sys.stderr)
                plan.append((name, device))
    else:
        names = default_backends()
        if not names:
            device, _ = runnable("torch")
            print(
                "note: no compiled backend can run here; timing the torch reference twin as 'ours'",
                file=sys.stderr,
            )
            names = ["torch"]
        for name in names:
            plan.append((name, runnable(name)[0]))

    records: list[dict] = []
    timers: dict[str, Timer] = {}
    machines: dict[str, dict] = {}
    cases = []
    for name, device in plan:
        if args.shapes:
            shapes = list(args.shapes)
        elif args.quick:
            shapes = list(QUICK_SHAPES) + (list(QUICK_GPU_EXTRA_SHAPES) if device == "cuda" else [])
        else:
            shapes = list(DEFAULT_SHAPES) + (list(GPU_EXTRA_SHAPES) if device == "cuda" else [])
        for kernel in args.kernels:
            if kernel in ONLY_ON and name not in ONLY_ON[kernel]:
                continue
            for N, d in shapes:
                if d > MAX_D.get(kernel, d):
                    continue
                cases.append((kernel, name, device, N, d))

    torch.manual_seed(0)
    started = time.perf_counter()
    load = _loadavg()
    if load is not None and load > 0.8 and "cpu" in {device for _, device in plan}:
        print(
            f"warning: load average {load:.2f} before the run: other processes share the CPU, "
            "CPU timings will be noisy (--threads 1 suffers least)",
            file=sys.stderr,
        )
    interrupted = False
    for i, (kernel, name, device, N, d) in enumerate(cases, 1):
        if args.max_seconds is not None and time.perf_counter() - started > args.max_seconds:
            left = len(cases) - i + 1
            print(f"--max-seconds {args.max_seconds:g} reached: {left} cases not run", file=sys.stderr)
            failures += 1
            break
        if device not in timers:
            timers[device] = Timer(device, args.cold)
            machines[device] = machine_info(device)
        t0 = time.perf_counter()
        try:
            rec = run_case(kernel, name, device, N, d, dtype, timers[device], args, machines[device])
        except KeyboardInterrupt:
            print("interrupted: printing the cases done so far", file=sys.stderr)
            interrupted = True
            failures += 1
            break
        records.append(rec)
        if "error" in rec:
            failures += 1
            status = "ERROR " + rec["error"]
        else:
            if not rec.get("check_ok", True):
                failures += 1
            status = (
                f"ours {rec['ours_ms']:.3f} ms, torch {rec['torch_ms']:.3f} ms, "
                f"{rec['gbps']:.1f} GB/s ({100 * rec['frac_of_copy']:.0f}% of copy)"
            )
        print(
            f"[{i}/{len(cases)}] {kernel} {name}/{device} {_shape_text(N, d)}: {status} "
            f"({time.perf_counter() - t0:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    for info in machines.values():
        info["loadavg_start"] = load
        info["loadavg_end"] = _loadavg()
    if args.json:
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1)
    for device, info in machines.items():
        desc = info.get("gpu") if device == "cuda" else info["cpu"]
        extra = f", {info['cpu_isa']} kernels" if device == "cpu" and "cpu_isa" in info else ""
        print(f"# {device}: {desc}; torch {info['torch']}, {info['threads']} threads{extra}")
    print(format_table(records))
    cold = ", cache flushed before every timed call" if args.cold else ", warm caches"
    print(TABLE_NOTE.format(cold=cold))
    print(f"# {len(records)} cases in {time.perf_counter() - started:.0f} s; {failures} failed")
    if args.json:
        print(f"# records written to {args.json}")
    return 130 if interrupted else (1 if failures else 0)


if __name__ == "__main__":
    sys.exit(main())
