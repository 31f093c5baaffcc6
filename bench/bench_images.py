#!/usr/bin/env python3
"""Image benchmark: a thin wrapper over the one shipped in the package.

    python bench/bench_images.py [--networks prior32 unet64 ddpm256] [--device cpu|cuda] [--json PATH] ...

is the same as ``python -m fkdiff.bench.images ...``; see ``python/fkdiff/bench/images.py`` (or
``--help``) for what is timed and how: seconds per sampler step and per restored image, and the
share of the time spent outside the network, for MCGdiff (N = 64) and DCPS with the shipped
32 x 32 prior, a 64 x 64 network and the 256 x 256 DDPM architecture.
"""

import sys

from fkdiff.bench.images import main

if __name__ == "__main__":
    sys.exit(main())
