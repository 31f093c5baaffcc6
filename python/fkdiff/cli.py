"""The ``fkdiff`` command line.

    fkdiff bench kernels [options]   time the kernels (see ``fkdiff bench kernels --help``)
    fkdiff bench samplers [options]  sampler throughput and memory against a plain PyTorch MCGdiff
    fkdiff bench images [options]    seconds per step and per image, share outside the network
    fkdiff demo                      MCGdiff and DCPS against an exact 2-D mixture posterior (PNG)
    fkdiff gmm [options]             the talk's Table 1 on the Gaussian-mixture benchmark
    fkdiff restore [options]         image restoration with the shipped prior or a diffusers model
    fkdiff train-prior [options]     train the bundled image prior (coloured MNIST DDPM, CPU)
"""

from __future__ import annotations

import argparse
import sys


def _demo(argv) -> int:
    from fkdiff import demo

    return demo.main(argv)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fkdiff", description="fkdiff command line")
    sub = parser.add_subparsers(dest="command", metavar="{bench,demo,gmm,restore,train-prior}")
    bench = sub.add_parser("bench", help="benchmarks", add_help=False)
    bench.add_argument("what", nargs="?", choices=("kernels", "samplers", "images"), help="which benchmark")
    sub.add_parser("demo", help="MCGdiff and DCPS against an exact mixture posterior", add_help=False)
    sub.add_parser("gmm", help="the talk's Table 1 on the Gaussian-mixture benchmark", add_help=False)
    sub.add_parser("restore", help="restore an image (inpainting, super-resolution, deblurring, colorization)", add_help=False)
    sub.add_parser("train-prior", help="train the bundled image prior (coloured MNIST DDPM)", add_help=False)
    args, rest = parser.parse_known_args(argv)

    if args.command == "bench":
        if args.what is None:
            if rest and rest[0] in ("-h", "--help"):
                print("usage: fkdiff bench {kernels,samplers,images} [options]   (e.g. fkdiff bench kernels --help)")
                return 0
            parser.error("bench: say which benchmark: fkdiff bench kernels [options]")
        if args.what == "samplers":
            from fkdiff.bench import samplers

            return samplers.main(rest)
        if args.what == "images":
            from fkdiff.bench import images

            return images.main(rest)
        from fkdiff.bench import kernels

        return kernels.main(rest)
    if args.command == "demo":
        return _demo(rest)
    if args.command == "gmm":
        from fkdiff import gmm_benchmark

        return gmm_benchmark.main(rest)
    if args.command == "restore":
        from fkdiff import restore

        return restore.main(rest)
    if args.command == "train-prior":
        from fkdiff.prior import train

        return train.main(rest)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
