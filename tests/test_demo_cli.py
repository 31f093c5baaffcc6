"""The command line: `fkdiff demo` runs end to end (small), `fkdiff bench kernels --help` answers."""

from __future__ import annotations

import torch

from fkdiff import cli, demo


def test_demo_runs_small_and_writes_a_figure(tmp_path, capsys):
    out = tmp_path / "demo.png"
    code = cli.main(["demo", "--samples", "60", "--particles", "16", "--out", str(out), "--no-progress"])
    assert code == 0 and out.exists() and out.stat().st_size > 10_000
    text = capsys.readouterr().out
    assert "MCGdiff" in text and "DCPS" in text and "noise floor" in text


def test_demo_problem_is_multimodal():
    """The demo's posterior keeps several modes (that is its point)."""
    from fkdiff.problems.gmm import exact_posterior

    post = exact_posterior(demo.make_problem())
    assert int((post.weights > 0.05).sum()) >= 3
    assert torch.isclose(post.weights.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_bench_help(capsys):
    assert cli.main(["bench"] + ["--help"]) == 0
