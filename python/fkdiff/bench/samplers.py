"""Sampler benchmark: MCGdiff and DCPS throughput and peak memory on the Gaussian-mixture problem.

Run ``python -m fkdiff.bench.samplers`` (or ``python bench/bench_samplers.py``; ``--help`` lists the
options). Problem: ``gmm25_prior(d_x)``, ``dcps_inverse_problem(prior, d_y=1, sigma_y=1)``, the
closed-form denoiser on ``linear_schedule(1000)``, float32, CPU.

* **Throughput.** ``fkdiff.MCGDiff(num_particles=N, num_steps=S)`` with ``num_samples=1``, timed
  over the whole call (initial draw + S steps + output), reported as particle-steps per second
  ``N S / seconds``; the baseline (``bench/baseline_mcgdiff.py``, a plain PyTorch MCGdiff with the
  released code's step structure) the same way, interleaved with ours in the same process.
  ``fkdiff.DCPS(num_steps=S)`` with ``num_samples=N``: sample-steps per second, against
  ``bench/baseline_dcps.py`` (plain PyTorch DCPS with the released code's step structure:
  original basis, autograd through the denoiser and through the variational parameters,
  unfused chains). Median of ``--repeats`` after one warm-up call per configuration.
* **Peak memory.** Each configuration runs once more in a fresh ``python -c`` child: the child
  builds the problem, records its current RSS, resets the peak (``/proc/self/clear_refs`` "5";
  ``ru_maxrss`` where that is not possible), runs one call and reports ``peak RSS - RSS before``.
  The denoiser's own share is measured the same way in its own child: particles ``(N, d)`` are
  allocated *before* the reset, then one call of the (rotated) mixture denoiser, keeping its two
  outputs; that growth (logits/responsibilities ``N K`` + temporaries + the two ``(N, d)``
  outputs) is subtracted: ``beyond = sampler growth - denoiser growth``, reported in units of the
  population ``N d 4`` bytes (target <= 4).

The baselines are found as ``bench/baseline_mcgdiff.py`` and ``bench/baseline_dcps.py`` next to the
package's source tree (or in ``--baseline-dir``); from an installed wheel without them, the
baseline columns are empty.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

DEFAULT_N = (1_000, 10_000, 100_000, 1_000_000)
DEFAULT_DCPS_N = (1_000, 10_000)


# ------------------------------------------------------------------------------------------------
# problem, samplers, baseline
# ------------------------------------------------------------------------------------------------


def make_problem(dim: int, seed: int = 0):
    from fkdiff.diffusion import linear_schedule
    from fkdiff.problems.gmm import dcps_inverse_problem, gmm25_prior

    g = torch.Generator().manual_seed(seed)
    prior = gmm25_prior(dim, generator=g)
    prob = dcps_inverse_problem(prior, d_y=1, sigma_y=1.0, generator=g)
    return prob, prior.denoiser(linear_schedule(1000))


BASELINES = {"mcgdiff": ("baseline_mcgdiff.py", "BaselineMCGDiff"), "dcps": ("baseline_dcps.py", "BaselineDCPS")}


def default_baseline_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "bench"


def load_baseline(sampler: str, directory=None):
    """The baseline class of ``sampler`` ("mcgdiff" or "dcps"), or None when its file is absent."""
    filename, cls = BASELINES[sampler]
    path = Path(directory or default_baseline_dir()) / filename
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"fkdiff_bench_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, cls)


def run_once(kind: str, N: int, steps: int, prob, den, baseline_cls=None, seed: int = 1) -> float:
    """One call of ``kind`` ("mcgdiff", "dcps", "mcgdiff_baseline", "dcps_baseline" or
    "denoiser"); returns seconds."""
    import fkdiff

    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    if kind == "mcgdiff":
        fkdiff.MCGDiff(num_particles=N, num_steps=steps)(den, prob.operator, prob.y, prob.sigma_y, progress=False, generator=g)
    elif kind == "mcgdiff_baseline":
        baseline_cls(N, steps)(den, prob.operator, prob.y, prob.sigma_y, generator=g)
    elif kind == "dcps":
        fkdiff.DCPS(num_steps=steps)(den, prob.operator, prob.y, prob.sigma_y, num_samples=N, progress=False, generator=g)
    elif kind == "dcps_baseline":
        baseline_cls(num_steps=steps)(den, prob.operator, prob.y, prob.sigma_y, N, generator=g)
    elif kind == "denoiser":  # the rotated mixture denoiser MCGdiff calls, one call on (N, d)
        from fkdiff.samplers.base import RotatedDenoiser

        rot = RotatedDenoiser(den, prob.operator)
        x = torch.randn(N, prob.operator.dim_x)
        t0 = time.perf_counter()
        rot.predict(x, 500)
    else:
        raise ValueError(kind)
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------
# peak memory in a child process
# ------------------------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def _child(kind: str, N: int, steps: int, dim: int, baseline_dir: str | None) -> None:
    """Runs in a fresh interpreter: prints ``{"growth": bytes, "method": ...}``."""
    import resource

    torch.set_grad_enabled(kind.startswith("dcps"))  # DCPS manages its own autograd
    prob, den = make_problem(dim)
    baseline_cls = load_baseline(kind.split("_")[0], baseline_dir) if kind.endswith("_baseline") else None
    keep = []
    if kind == "denoiser":
        from fkdiff.samplers.base import RotatedDenoiser

        rot = RotatedDenoiser(den, prob.operator)
        x = torch.randn(N, dim)
        rot.predict(x[:8], 500)  # warm the code path on a tiny batch
    else:
        run_once(kind, min(N, 64), steps, prob, den, baseline_cls)  # warm the code path, small
    before = _rss()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        method = "VmHWM after clear_refs 5"
        peak0 = None
    except OSError:
        method = "ru_maxrss"
        peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if kind == "denoiser":
        keep.append(rot.predict(x, 500))
    else:
        run_once(kind, N, steps, prob, den, baseline_cls)
    peak = _hwm() if peak0 is None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {"growth": max(peak - before, 0), "method": method}
    if peak0 is not None and peak <= peak0:
        out["note"] = "peak not above the import peak: growth is an upper bound"
    print(json.dumps(out))


def measure_memory(kind: str, N: int, steps: int, dim: int, baseline_dir, timeout: float = 600) -> dict:
    code = ("import sys; from fkdiff.bench.samplers import _child; "
            f"_child({kind!r}, {N}, {steps}, {dim}, {str(baseline_dir) if baseline_dir else None!r})")
    env = dict(os.environ)
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# profile of one MCGdiff step
# ------------------------------------------------------------------------------------------------


def profile_step(N: int, dim: int) -> dict:
    """Wall time of one MCGdiff step split into denoiser / kernels / bookkeeping: the call with
    S = 2 minus the call with S = 1 is one (non-last) step; the denoiser alone on (N, d) and the
    per-step kernels (fkdiff.ops: weight, resample, mutation) are timed separately with the
    torch profiler's op table (self CPU time per op name)."""
    import fkdiff

    prob, den = make_problem(dim)
    args = (den, prob.operator, prob.y, prob.sigma_y)
    fkdiff.MCGDiff(num_particles=N, num_steps=2)(*args, progress=False)  # warm
    with torch.profiler.profile() as prof:
        t0 = time.perf_counter()
        fkdiff.MCGDiff(num_particles=N, num_steps=2)(*args, progress=False)
        total = time.perf_counter() - t0
    rows = sorted(((e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()), key=lambda r: -r[1])
    return {"N": N, "steps": 2, "seconds_total": total, "ops": [{"op": k, "self_s": s, "calls": c} for k, s, c in rows[:20]]}


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def _fmt(x, spec=".3g"):
    return "-" if x is None else format(x, spec)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fkdiff.bench.samplers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=100, help="d_x (default 100)")
    p.add_argument("--particles", type=float, nargs="*", default=list(DEFAULT_N), help="MCGdiff N values")
    p.add_argument("--dcps-samples", type=float, nargs="*", default=list(DEFAULT_DCPS_N), help="DCPS num_samples values")
    p.add_argument("--steps", type=int, default=5, help="S, steps per timed call (default 5)")
    p.add_argument("--large-n", type=float, default=1e6, help="from this N on: S = --large-steps, one repeat (default 1e6)")
    p.add_argument("--large-steps", type=int, default=2)
    p.add_argument("--dcps-steps", type=int, default=6, help="DCPS num_steps (default 6; num_blocks=3)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--baseline-dir", default=None, help="where baseline_mcgdiff.py and baseline_dcps.py are (default: bench/ of the source tree)")
    p.add_argument("--baseline-max-n", type=float, default=1e5,
                   help="skip the baseline above this N (default 1e5: at 1e6 it takes ~10 s a step here)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS children")
    p.add_argument("--profile", type=float, default=None, metavar="N", help="also profile one MCGdiff call (S=2) at N")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dim = args.dim
    baseline_dir = Path(args.baseline_dir) if args.baseline_dir else default_baseline_dir()
    baselines = {name: load_baseline(name, baseline_dir) for name in BASELINES}
    for name, cls in baselines.items():
        if cls is None:
            print(f"note: no {BASELINES[name][0]} in {baseline_dir}; {name} baseline columns empty", file=sys.stderr)
    prob, den = make_problem(dim)
    load0 = os.getloadavg()
    started = time.perf_counter()
    rows = []

    def measure(sampler, N, S, reps, unit):
        """Ours and the baseline interleaved (after one small warm-up call each), then peak
        memory; one row."""
        row = {"sampler": sampler, "N": N, "steps": S, "repeats": reps, "population_bytes": N * dim * 4}
        cls = baselines[sampler]
        run_base = cls is not None and N <= args.baseline_max_n
        run_once(sampler, min(N, 1000), S, prob, den)
        if run_base:
            run_once(f"{sampler}_baseline", min(N, 1000), S, prob, den, cls)
        ours, base = [], []
        for _ in range(reps):
            ours.append(run_once(sampler, N, S, prob, den))
            if run_base:
                base.append(run_once(f"{sampler}_baseline", N, S, prob, den, cls))
        row["seconds"] = ours
        row["throughput"] = N * S / statistics.median(ours)
        row["baseline_seconds"] = base or None
        row["baseline_throughput"] = N * S / statistics.median(base) if base else None
        row["speedup"] = row["throughput"] / row["baseline_throughput"] if base else None
        if not run_base:
            row["baseline_note"] = "skipped (N > --baseline-max-n)" if baselines[sampler] is not None else "no baseline file"
        if not args.no_memory:
            row["mem_growth"] = measure_memory(sampler, N, S, dim, baseline_dir).get("growth")
            if sampler == "mcgdiff":
                row["mem_denoiser"] = measure_memory("denoiser", N, S, dim, baseline_dir).get("growth")
            if run_base:
                row["mem_baseline"] = measure_memory(f"{sampler}_baseline", N, S, dim, baseline_dir).get("growth")
            if row["mem_growth"] is not None and row.get("mem_denoiser") is not None:
                row["mem_beyond_denoiser"] = row["mem_growth"] - row["mem_denoiser"]
                row["beyond_over_population"] = row["mem_beyond_denoiser"] / row["population_bytes"]
        rows.append(row)
        print(f"  {sampler} N={N}: {row['throughput']:.3g} {unit}/s (baseline {_fmt(row['baseline_throughput'])})",
              file=sys.stderr, flush=True)

    for Nf in args.particles:
        N = int(Nf)
        large = N >= args.large_n
        S, reps = (args.large_steps, 1) if large else (args.steps, args.repeats)
        measure("mcgdiff", N, S, reps, "particle-steps")
    torch.set_grad_enabled(True)
    for Nf in args.dcps_samples:
        measure("dcps", int(Nf), args.dcps_steps, args.repeats, "sample-steps")

    prof = profile_step(int(args.profile), dim) if args.profile else None
    load1 = os.getloadavg()

    MB = 2**20
    print(f"\nGaussian mixture d_x={dim}, d_y=1, sigma_y=1, float32 CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load avg before {load0[0]:.2f}, after {load1[0]:.2f}")
    hdr = (f"{'sampler':8} {'N':>8} {'S':>2} {'ours /s':>9} {'base /s':>9} {'speedup':>7} "
           f"{'pop MB':>7} {'peak+ MB':>8} {'den MB':>7} {'beyond/pop':>10} {'base MB':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        mb = lambda k: _fmt(r.get(k) / MB, ".0f") if r.get(k) is not None else "-"  # noqa: E731
        print(f"{r['sampler']:8} {r['N']:>8} {r['steps']:>2} {_fmt(r['throughput']):>9} {_fmt(r['baseline_throughput']):>9} "
              f"{_fmt(r['speedup'], '.2f'):>7} {r['population_bytes'] / MB:>7.0f} {mb('mem_growth'):>8} "
              f"{mb('mem_denoiser'):>7} {_fmt(r.get('beyond_over_population'), '.2f'):>10} {mb('mem_baseline'):>8}")
    print("throughput: mcgdiff particle-steps/s (num_samples=1), dcps sample-steps/s; "
          "peak+ = peak RSS growth of one call in a fresh process; den = the denoiser's own (one call on (N, d), "
          "outputs kept); beyond/pop = (peak+ - den) / (N d 4 B), target <= 4")
    if prof:
        print(f"\nprofile: MCGdiff N={prof['N']} S=2 call, {prof['seconds_total']:.2f} s; top ops by self CPU time:")
        for o in prof["ops"][:12]:
            print(f"  {o['op']:32} {o['self_s']:8.3f} s  {o['calls']:4d} calls")

    result = {"dim": dim, "torch": torch.__version__, "threads": torch.get_num_threads(), "platform": platform.platform(),
              "cpu_count": os.cpu_count(), "loadavg_before": load0, "loadavg_after": load1,
              "wall_seconds": time.perf_counter() - started, "rows": rows, "profile": prof}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
