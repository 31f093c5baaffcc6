#!/usr/bin/env python3
"""Sampler benchmark: a thin wrapper over the one shipped in the package.

    python bench/bench_samplers.py [--particles 1e3 1e4 1e5 1e6] [--json PATH] [--profile 1e5] ...

is the same as ``python -m fkdiff.bench.samplers ...``; see ``python/fkdiff/bench/samplers.py``
(or ``--help``) for what is timed and how. The baseline it compares against is
``bench/baseline_mcgdiff.py``.
"""

import sys

from fkdiff.bench.samplers import main

if __name__ == "__main__":
    sys.exit(main())
