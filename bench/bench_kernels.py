#!/usr/bin/env python3
"""Kernel benchmark: a thin wrapper over the one shipped in the package.

    python bench/bench_kernels.py [--backends cpu cuda triton] [--quick] [--json PATH] ...

is the same as ``fkdiff bench kernels ...`` and ``python -m fkdiff.bench.kernels ...``; see
``python/fkdiff/bench/kernels.py`` (or ``--help``) for what is timed and how.
"""

import sys

from fkdiff.bench.kernels import main

if __name__ == "__main__":
    sys.exit(main())
