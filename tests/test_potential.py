"""Gaussian-potential log-weighting and the fused MCGdiff weight against the float64 reference."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fkdiff import ops

from conftest import interpreted


def close(got: torch.Tensor, expect: torch.Tensor, scale: torch.Tensor, dtype) -> None:
    """|got - expect| <= c eps_dtype (scale + 1), with ``scale`` the sum of the absolute terms:
    a sum of m terms in the working precision errs by at most ~m eps |terms| with one
    accumulator, far less with a tree; c = 64 covers m up to 2e5 with blocked sums."""
    eps = torch.finfo(dtype).eps
    err = (got.cpu().double() - expect).abs()
    bound = 64 * eps * (scale + 1.0)
    assert bool((err <= bound).all()), f"max err {err.max().item():.3e}, bound {bound.min().item():.3e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(
    B=st.integers(1, 3),
    N=st.integers(1, 600),
    d=st.integers(1, 40),
    per_population=st.booleans(),
    accumulate=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_potential_matches_reference(backend, dtype, B, N, d, per_population, accumulate, seed):
    name, device = backend
    gen = torch.Generator().manual_seed(seed)
    m = int(torch.randint(0, d + 1, (1,), generator=gen))  # weighted coordinates: the first m
    x = torch.randn(B, N, d, generator=gen, dtype=torch.float64).to(dtype)
    shape = (B, m) if per_population else (m,)
    t = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    a = (0.5 + torch.rand(shape, generator=gen, dtype=torch.float64)).to(dtype)
    v = (0.1 + torch.rand(shape, generator=gen, dtype=torch.float64)).to(dtype)
    if m > 1:
        v.view(-1, m)[:, -1] = math.inf  # an unobserved coordinate contributes nothing
    base = torch.randn(B, N, generator=gen, dtype=torch.float64).to(dtype)
    const = torch.randn(B, generator=gen, dtype=torch.float64)
    out = base.clone().to(device)
    got = ops.gaussian_log_potential(
        x.to(device), t.to(device), v.to(device), scale=a.to(device), coords=m, const=const.to(device),
        out=out, accumulate=accumulate, backend=name,
    )
    assert got is out
    tt, aa, vv = (z.double().expand(B, m)[:, None, :] for z in (t, a, v))
    terms = torch.where(torch.isinf(vv), 0.0, (tt - aa * x.double()[..., :m]) ** 2 / (2 * vv))
    expect = -terms.sum(-1) + const[:, None] + (base.double() if accumulate else 0.0)
    close(got, expect, terms.abs().sum(-1) + base.double().abs() + const.abs()[:, None], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_potential_column_slice_reads_in_place(backend, dtype):
    """A slice of coordinates is read through the row stride, not copied."""
    name, device = backend
    x = torch.randn(2, 333, 17, dtype=dtype, device=device)
    got = ops.gaussian_log_potential(x, 0.5, 2.0, coords=slice(3, 11), backend=name)
    expect = -((0.5 - x.double()[..., 3:11]) ** 2 / 4.0).sum(-1)
    close(got, expect.cpu(), ((0.5 - x.double()[..., 3:11]) ** 2 / 4.0).sum(-1).cpu(), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("normalized", [True, False])
def test_mcgdiff_weight_is_one_pass_of_two_potentials(backend, dtype, normalized):
    name, device = backend
    gen = torch.Generator().manual_seed(1)
    B, N, d, m = 2, 257, 9, 4
    mean = torch.randn(B, N, d, generator=gen, dtype=torch.float64).to(dtype)
    x = torch.randn(B, N, d, generator=gen, dtype=torch.float64).to(dtype)
    ybar = torch.randn(B, m, generator=gen, dtype=torch.float64)
    var_new = 0.3 + torch.rand(m, generator=gen, dtype=torch.float64)
    var_old = 0.2 + torch.rand(m, generator=gen, dtype=torch.float64)
    t_new, t_old = 0.9 * ybar, 0.8 * ybar
    args = [z.to(dtype).to(device) for z in (t_new, var_new, t_old, var_old)]
    got = ops.mcgdiff_log_weight(mean.to(device), x.to(device), *args, coords=m, normalized=normalized, backend=name)
    new = torch.distributions.Normal(mean.double()[..., :m], var_new.sqrt()).log_prob(t_new.to(dtype).double()[:, None, :]).sum(-1)
    old = torch.distributions.Normal(t_old.to(dtype).double()[:, None, :], var_old.sqrt()).log_prob(x.double()[..., :m]).sum(-1)
    expect = new - old
    if not normalized:
        expect = expect - ops.gaussian_log_normalizer(var_new.to(dtype)) + ops.gaussian_log_normalizer(var_old.to(dtype))
    close(got, expect, new.abs() + old.abs(), dtype)


def test_potential_image_row(backend):
    """One long row (an image's worth of coordinates) sums with a bounded error in float32."""
    name, device = backend
    d = 3 * 64 * 64 if interpreted(name, device) else 3 * 256 * 256
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(2)).to(device)
    got = ops.gaussian_log_potential(x, 0.0, 1.0, backend=name)
    expect = -(x.double() ** 2).sum(-1) / 2
    close(got, expect.cpu(), (x.double() ** 2).sum(-1).cpu() / 2, torch.float32)


def test_potential_nan_is_flagged(backend):
    name, device = backend
    x = torch.randn(4, 3, device=device)
    x[2, 1] = math.nan
    flags = ops.new_flags(device)
    got = ops.gaussian_log_potential(x, 0.0, 1.0, backend=name, flags=flags)
    assert torch.isnan(got[2]) and bool(torch.isfinite(got[[0, 1, 3]]).all())
    with pytest.raises(ValueError, match="x: the Gaussian potential came out NaN"):
        ops.check_flags(flags)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d, m", [(64, 64), (100, 97), (16389, 16389), (40001, 33000)])
def test_potential_long_rows(backend, dtype, d, m):
    """Rows of at least 64 coordinates (the long-row path; rows over 16384 coordinates are summed
    in column chunks): per-population t, a, v with an unobserved coordinate, accumulate, const,
    against the reference; and the fused two-form weight with long forms."""
    name, device = backend
    if interpreted(name, device) and d > 100:
        pytest.skip("the interpreter is slow on long rows")
    gen = torch.Generator().manual_seed(d)
    B, N = 2, 37
    x = torch.randn(B, N, d, generator=gen, dtype=torch.float64).to(dtype)
    t = torch.randn(B, m, generator=gen, dtype=torch.float64).to(dtype)
    a = (0.5 + torch.rand(B, m, generator=gen, dtype=torch.float64)).to(dtype)
    v = (0.1 + torch.rand(B, m, generator=gen, dtype=torch.float64)).to(dtype)
    v[:, m // 2] = math.inf
    base = torch.randn(B, N, generator=gen, dtype=torch.float64).to(dtype)
    const = torch.randn(B, generator=gen, dtype=torch.float64)
    got = ops.gaussian_log_potential(x.to(device), t.to(device), v.to(device), scale=a.to(device), coords=m,
                                     const=const.to(device), out=base.clone().to(device), accumulate=True, backend=name)
    tt, aa, vv = (z.double()[:, None, :] for z in (t, a, v))
    terms = torch.where(torch.isinf(vv), 0.0, (tt - aa * x.double()[..., :m]) ** 2 / (2 * vv))
    expect = -terms.sum(-1) + const[:, None] + base.double()
    close(got, expect, terms.abs().sum(-1) + base.double().abs() + const.abs()[:, None], dtype)

    mean = torch.randn(B, N, d, generator=gen, dtype=torch.float64).to(dtype)
    var_new = (0.3 + torch.rand(m, generator=gen, dtype=torch.float64)).to(dtype)
    got2 = ops.mcgdiff_log_weight(mean.to(device), x.to(device), t[0].to(device), var_new.to(device), t[1].to(device),
                                  v[1].to(device), coords=m, normalized=False, backend=name)
    new = (t[0].double() - mean.double()[..., :m]) ** 2 / (2 * var_new.double())
    old = torch.where(torch.isinf(v[1].double()), 0.0, (x.double()[..., :m] - t[1].double()) ** 2 / (2 * v[1].double()))
    close(got2, -new.sum(-1) + old.sum(-1), new.sum(-1) + old.sum(-1), dtype)


@pytest.mark.parametrize("d", [5, 100, 40001])
def test_cpu_potential_is_independent_of_the_thread_count(d):
    """Same bits with 1 and 2 threads (tiles and column chunks do not depend on the thread count)."""
    if "cpu" not in ops.backends()["cpu"]["devices"]:
        pytest.skip("the compiled CPU backend is not built")
    x = torch.randn(3, 129, d, generator=torch.Generator().manual_seed(3))
    before = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(ops.mcgdiff_log_weight(x, x.flip(1), 0.3, 0.7, -0.2, 1.3, coords=d, backend="cpu"))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N", [1, 7, 8, 37, 1000])
def test_potential_rows_of_four(backend, dtype, N):
    """(B, N, 4) with nothing added (the benchmark's shape; the CPU backend writes -Q straight into
    the output there): against the reference, and a NaN row is flagged."""
    name, device = backend
    gen = torch.Generator().manual_seed(N)
    x = torch.randn(2, N, 4, generator=gen, dtype=torch.float64).to(dtype)
    t = torch.randn(2, 4, generator=gen, dtype=torch.float64).to(dtype)
    v = (0.1 + torch.rand(2, 4, generator=gen, dtype=torch.float64)).to(dtype)
    got = ops.gaussian_log_potential(x.to(device), t.to(device), v.to(device), backend=name)
    terms = (t.double()[:, None] - x.double()) ** 2 / (2 * v.double()[:, None])
    close(got, -terms.sum(-1), terms.sum(-1), dtype)
    x[1, N // 2, 3] = math.nan
    flags = ops.new_flags(device)
    got = ops.gaussian_log_potential(x.to(device), t.to(device), v.to(device), backend=name, flags=flags)
    assert torch.isnan(got[1, N // 2]) and int(torch.isnan(got).sum()) == 1
    with pytest.raises(ValueError, match="NaN"):
        ops.check_flags(flags)
