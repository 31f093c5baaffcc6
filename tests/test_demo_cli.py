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


def test_gmm_table_small(tmp_path, capsys):
    """`fkdiff gmm` end to end at toy size: rows and summary in the JSON, the talk's numbers beside."""
    import json

    path = tmp_path / "gmm.json"
    code = cli.main(["gmm", "--dims", "10", "--seeds", "1", "--samples", "50", "--particles", "16", "--steps", "20",
                     "--methods", "mcgdiff", "dps", "dcps5", "--no-progress", "--json", str(path)])
    assert code == 0
    data = json.loads(path.read_text())
    assert {r["method"] for r in data["rows"]} == {"mcgdiff", "dps", "dcps5"}
    assert set(data["rows"][0]) >= {"method", "dim", "obs_dim", "seed", "sw", "dw", "spread", "noise_floor", "seconds", "nfe"}
    assert next(s for s in data["summary"] if s["method"] == "mcgdiff")["talk"][0] == 2.25
    assert "talk SW" in capsys.readouterr().out


def test_gmm_resume_runs_only_missing_rows(tmp_path):
    """`--resume` keeps the rows of an interrupted run and adds only the missing (method, seed)."""
    import json

    path = tmp_path / "gmm.json"
    base = ["gmm", "--dims", "4", "--samples", "20", "--particles", "8", "--steps", "5", "--no-progress", "--json", str(path)]
    assert cli.main(base + ["--seeds", "1", "--methods", "mcgdiff"]) == 0
    first = json.loads(path.read_text())["rows"]
    assert cli.main(base + ["--seeds", "2", "--methods", "mcgdiff", "mcgdiff_moment", "--resume"]) == 0
    rows = json.loads(path.read_text())["rows"]
    assert sorted((r["method"], r["seed"]) for r in rows) == [
        ("mcgdiff", 0), ("mcgdiff", 1), ("mcgdiff_moment", 0), ("mcgdiff_moment", 1)
    ]
    assert rows[0] == first[0]  # kept as it was, not recomputed


def test_gmm_device_option(tmp_path):
    """`--device` runs the samplers there (CPU here) and records it; an unusable device is refused."""
    import json

    import pytest
    import torch

    path = tmp_path / "gmm.json"
    assert cli.main(["gmm", "--dims", "4", "--seeds", "1", "--samples", "20", "--particles", "8", "--steps", "5",
                     "--methods", "mcgdiff", "dcps5", "--device", "cpu", "--no-progress", "--json", str(path)]) == 0
    assert {r["device"] for r in json.loads(path.read_text())["rows"]} == {"cpu"}
    with pytest.raises(SystemExit):
        cli.main(["gmm", "--device", "nope", "--no-progress"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            cli.main(["gmm", "--device", "cuda", "--no-progress"])


def test_gmm_json_lock(tmp_path):
    """Two runs never write the same JSON: a live run's lock refuses, a dead run's is taken over."""
    import os

    import pytest

    path = tmp_path / "gmm.json"
    lock = tmp_path / "gmm.json.lock"
    lock.write_text(str(os.getpid()))  # "another run", alive
    args = ["gmm", "--dims", "4", "--seeds", "1", "--samples", "20", "--particles", "8", "--steps", "5",
            "--methods", "mcgdiff", "--no-progress", "--json", str(path)]
    with pytest.raises(SystemExit):
        cli.main(args)
    assert not path.exists()
    lock.write_text("999999999")  # a pid that cannot exist: stale
    assert cli.main(args) == 0
    assert path.exists() and not lock.exists()


def test_gmm_rejects_unknown_method():
    import pytest

    with pytest.raises(ValueError, match="methods: unknown method"):
        cli.main(["gmm", "--methods", "nope", "--no-progress"])


def test_gmm_first_seed_picks_the_problems(tmp_path):
    """`--first-seed F --seeds S` runs problems F..F+S-1 (another set of problems than Table 1's
    0..19); a negative first seed or no problem at all is refused."""
    import json

    import pytest

    path = tmp_path / "gmm.json"
    assert cli.main(["gmm", "--dims", "4", "--first-seed", "7", "--seeds", "2", "--samples", "20", "--particles", "8",
                     "--steps", "5", "--methods", "mcgdiff", "--no-progress", "--json", str(path)]) == 0
    assert sorted(r["seed"] for r in json.loads(path.read_text())["rows"]) == [7, 8]
    for bad in (["--first-seed", "-1"], ["--seeds", "0"]):
        with pytest.raises(SystemExit):
            cli.main(["gmm", "--no-progress"] + bad)


def test_bench_kernels_mixture_runs_and_checks(tmp_path):
    """The kernel benchmark's mixture case (CPU pass vs the PyTorch sequence) runs, passes its
    float64 check, and is left out for backends that have no such pass."""
    import json

    from fkdiff.bench import kernels

    path = tmp_path / "k.json"
    assert kernels.main(["--backends", "cpu", "torch", "--kernels", "mixture", "--shapes", "1000x4", "37x17", "5x2000",
                         "--repeats", "1", "--warmup", "0", "--no-cold-l2", "--json", str(path)]) == 0
    records = json.loads(path.read_text())
    assert sorted((r["backend"], tuple(r["shape"])) for r in records) == [
        ("cpu", (37, 17)), ("cpu", (1000, 4)), ("torch", (37, 17)), ("torch", (1000, 4))]  # rows > 1000 skipped
    assert all(r["check_ok"] and r["speedup"] > 0 for r in records)
    assert kernels.ONLY_ON["mixture"] == ("cpu", "torch")


def test_gmm_dcps_blocks_reach_the_sampler(tmp_path):
    """`--dcps-blocks L` builds dcpsM with L blocks (recorded in each row's `sampler`); an
    impossible block count is refused before anything runs."""
    import json

    import pytest

    path = tmp_path / "gmm.json"
    assert cli.main(["gmm", "--dims", "4", "--seeds", "1", "--samples", "20", "--steps", "8", "--methods", "dcps3",
                     "--dcps-blocks", "4", "--no-progress", "--json", str(path)]) == 0
    (row,) = json.loads(path.read_text())["rows"]
    assert "num_blocks=4" in row["sampler"] and "langevin_steps=3" in row["sampler"]
    with pytest.raises(ValueError, match="num_blocks"):
        cli.main(["gmm", "--methods", "dcps5", "--steps", "8", "--dcps-blocks", "9", "--no-progress"])
