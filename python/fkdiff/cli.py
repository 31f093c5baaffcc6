"""The ``fkdiff`` command line.

    fkdiff bench kernels [options]   time the kernels (see ``fkdiff bench kernels --help``)
    fkdiff demo                      a short tour: the backends, one resampling + mutation step
"""

from __future__ import annotations

import argparse
import sys
import time


def _demo(argv) -> int:
    """Placeholder demo: list the backends, run one resampling + mutation step with timings."""
    p = argparse.ArgumentParser(prog="fkdiff demo", description="A short tour of fkdiff's kernels.")
    p.add_argument("--n", type=int, default=100_000, help="particles (default %(default)s)")
    p.add_argument("--d", type=int, default=16, help="coordinates (default %(default)s)")
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    args = p.parse_args(argv)

    import torch

    import fkdiff
    from fkdiff import ops

    print(f"fkdiff {fkdiff.__version__}, torch {torch.__version__}")
    for name, status in fkdiff.backends().items():
        runs = ", ".join(status["devices"]) or "-"
        print(f"  {name:<7} built={status['built']!s:<5} runs on: {runs:<10} {status['detail']}")

    device = torch.device(args.device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(args.n, args.d, generator=gen).to(device)
    lw = (2.0 * torch.randn(args.n, generator=gen, dtype=torch.float64)).to(device)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result, (time.perf_counter() - t0) * 1e3

    for _ in range(2):  # the second round is warm
        anc, t_res = timed(lambda: ops.resample(lw, u=0.5, index_dtype=torch.int32))
        new, t_mut = timed(lambda: ops.auxiliary_mutation(x, 0.3, 0.0, 0.5, ancestors=anc, seed=1))
    print(f"resample   N={args.n}: {t_res:.3f} ms, ESS before = {float(ops.ess(lw)):.0f}, "
          f"distinct ancestors = {int(torch.unique(anc).numel())}")
    print(f"mutation   N={args.n}, d={args.d}: {t_mut:.3f} ms, mean {float(new.mean()):+.3f}, std {float(new.std()):.3f}")
    return 0


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fkdiff", description="fkdiff command line")
    sub = parser.add_subparsers(dest="command", metavar="{bench,demo}")
    bench = sub.add_parser("bench", help="benchmarks", add_help=False)
    bench.add_argument("what", nargs="?", choices=("kernels",), help="which benchmark")
    sub.add_parser("demo", help="a short tour of the kernels", add_help=False)
    args, rest = parser.parse_known_args(argv)

    if args.command == "bench":
        if args.what is None:
            if rest and rest[0] in ("-h", "--help"):
                print("usage: fkdiff bench kernels [options]   (fkdiff bench kernels --help for the options)")
                return 0
            parser.error("bench: say which benchmark: fkdiff bench kernels [options]")
        from fkdiff.bench import kernels

        return kernels.main(rest)
    if args.command == "demo":
        return _demo(rest)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
