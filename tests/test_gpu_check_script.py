"""``bench/gpu_check.sh`` runs only where a GPU is lent (rarely, and against a clock): check here
that it parses, that its step selection and time budget work, and that it always ends with the
summary and the benchmark table — so a lent GPU is never spent on a script error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def test_gpu_check_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def _dry_run(tmp_path, **env):
    full = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path), GPU_CHECK_SKIP_BUILD="1", **env)
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=full, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_gpu_check_dry_run_selects_steps_and_ends_with_the_table(tmp_path):
    rc, out = _dry_run(tmp_path, GPU_CHECK_STEPS="none")
    for bad in ("unbound variable", "syntax error", "command not found: budget", "bad substitution"):
        assert bad not in out, out[-3000:]
    for step in ("tests", "bench", "scale", "images"):
        assert f"{step:<8} skipped: not in GPU_CHECK_STEPS" in out
    assert "=== summary" in out and "RESULT:" in out
    assert out.index("=== kernel benchmark table") > out.index("=== summary")
    assert (tmp_path / "bench_table.txt").exists()
    # the figures first, the tests last (they take whatever time is left)
    order = [out.index(f"\n{step:<8} ") for step in ("machine", "build", "import", "bench", "scale", "images", "tests")]
    assert order == sorted(order), out[-1500:]


def test_gpu_check_skips_a_step_when_the_budget_is_spent(tmp_path):
    # a total budget already used up by the first steps: every selected step is skipped, and the
    # run says so and fails (a skipped check is not a passed one)
    rc, out = _dry_run(tmp_path, GPU_CHECK_STEPS="scale", GPU_CHECK_TOTAL_SECONDS="1")
    assert "scale    skipped: no time left" in out
    assert "RESULT: FAILED" in out and rc != 0
