"""Auxiliary mutation (gather on read) and tamed Langevin against the float64 reference fed with
the same Philox noise."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fkdiff import ops
from fkdiff.ops import reference

from conftest import interpreted

NORMAL_ATOL = 1e-5  # backends' float32 normals vs the float64 evaluation (see test_noise.py)


def assert_noise_close(got, expect, noise_scale, magnitude, dtype):
    """Error budget: the noise's 1e-5 times its scale, plus rounding of the deterministic part."""
    eps = torch.finfo(dtype).eps
    err = (got.cpu().double() - expect).abs()
    bound = NORMAL_ATOL * noise_scale + 8 * eps * (magnitude + 1.0)
    assert bool((err <= bound).all()), f"max err {err.max().item():.3e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(
    B=st.integers(1, 3),
    Np=st.integers(1, 300),
    N=st.integers(1, 300),
    d=st.integers(1, 13),
    with_ancestors=st.booleans(),
    seed=st.integers(0, 2**64 - 1),
    offset=st.integers(0, 2**64 - 1),
)
def test_mutation_matches_reference(backend, dtype, B, Np, N, d, with_ancestors, seed, offset):
    name, device = backend
    gen = torch.Generator().manual_seed(seed % 2**31)
    if not with_ancestors:
        N = Np
    m = torch.randn(B, Np, d, generator=gen, dtype=torch.float64).to(dtype)
    K = torch.rand(B, d, generator=gen, dtype=torch.float64).to(dtype)
    K[:, d // 2 :] = 0  # free coordinates
    c = torch.randn(d, generator=gen, dtype=torch.float64).to(dtype)
    s = (0.1 + torch.rand(d, generator=gen, dtype=torch.float64)).to(dtype)
    anc = torch.sort(torch.randint(0, Np, (B, N), generator=gen), dim=1).values if with_ancestors else None
    got = ops.auxiliary_mutation(
        m.to(device), K.to(device), c.to(device), s.to(device),
        ancestors=None if anc is None else anc.to(device), seed=seed, offset=offset, backend=name,
    )
    expect = torch.empty(B, N, d, dtype=torch.float64)
    reference.mutation(m.double(), anc, K.double(), c.double().expand(B, d), s.double().expand(B, d), seed, offset, expect, torch.zeros(1, dtype=torch.int32))
    assert_noise_close(got, expect, s.double().abs().max().item(), expect.abs(), dtype)


def test_mutation_int32_ancestors_and_out(backend):
    name, device = backend
    m = torch.randn(2, 50, 6, device=device)
    anc = torch.randint(0, 50, (2, 80), dtype=torch.int32, device=device)
    out = torch.empty(2, 80, 6, device=device)
    got = ops.auxiliary_mutation(m, 0.0, 0.0, 0.0, ancestors=anc, seed=1, out=out, backend=name)
    assert got is out
    assert torch.equal(out.cpu(), torch.gather(m.cpu(), 1, anc.cpu().long()[:, :, None].expand(2, 80, 6)))


def test_mutation_bad_ancestor_is_flagged_not_read(backend):
    name, device = backend
    m = torch.randn(1, 10, 3, device=device)
    anc = torch.tensor([[0, 3, 10**9, -1]], device=device)
    flags = ops.new_flags(device)
    got = ops.auxiliary_mutation(m, 0.5, 0.0, 1.0, ancestors=anc, seed=3, backend=name, flags=flags).cpu()
    assert bool(torch.isnan(got[0, 2:]).all()) and bool(torch.isfinite(got[0, :2]).all())
    with pytest.raises(ValueError, match="ancestors"):
        ops.check_flags(flags)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@given(
    B=st.integers(1, 3),
    N=st.integers(1, 200),
    d=st.integers(1, 70),
    in_place=st.booleans(),
    seed=st.integers(0, 2**64 - 1),
    offset=st.integers(0, 2**64 - 1),
)
def test_tamed_langevin_matches_reference(backend, dtype, B, N, d, in_place, seed, offset):
    name, device = backend
    gen = torch.Generator().manual_seed(seed % 2**31)
    x = torch.randn(B, N, d, generator=gen, dtype=torch.float64).to(dtype)
    g = (10 * torch.randn(B, N, d, generator=gen, dtype=torch.float64)).to(dtype)
    gamma = 0.05
    expect = torch.empty(B, N, d, dtype=torch.float64)
    reference.tamed_langevin(x.double(), g.double(), gamma, seed, offset, expect, torch.zeros(1, dtype=torch.int32))
    xd = x.to(device)
    got = ops.tamed_langevin(xd, g.to(device), gamma, seed=seed, offset=offset, out=xd if in_place else None, backend=name)
    if in_place:
        assert got is xd
    assert_noise_close(got, expect, math.sqrt(2 * gamma), expect.abs() + 1.0, dtype)


def test_tamed_langevin_image_rows(backend):
    """Rows too long for one block (an image): the norm pass and update pass agree with the
    reference."""
    name, device = backend
    d = 3 * 32 * 32 if interpreted(name, device) else 3 * 256 * 256
    x = torch.randn(2, 3, d, generator=torch.Generator().manual_seed(0))
    g = torch.randn(2, 3, d, generator=torch.Generator().manual_seed(1))
    expect = torch.empty(2, 3, d, dtype=torch.float64)
    reference.tamed_langevin(x.double(), g.double(), 1e-3, 5, 77, expect, torch.zeros(1, dtype=torch.int32))
    got = ops.tamed_langevin(x.to(device), g.to(device), 1e-3, seed=5, offset=77, backend=name)
    assert_noise_close(got, expect, math.sqrt(2e-3), expect.abs() + 1.0, torch.float32)


def test_tamed_langevin_nonfinite_gradient_is_flagged(backend):
    name, device = backend
    x = torch.zeros(1, 4, 5, device=device)
    g = torch.ones(1, 4, 5, device=device)
    g[0, 1, 2] = math.inf
    flags = ops.new_flags(device)
    ops.tamed_langevin(x, g, 0.1, seed=1, backend=name, flags=flags)
    with pytest.raises(ValueError, match="grad"):
        ops.check_flags(flags)


def test_chunking_does_not_change_noise(backend):
    """Two half-population calls with advanced offsets equal one whole call (counter layout)."""
    name, device = backend
    B, N, d = 1, 64, 5
    m = torch.randn(B, N, d, device=device)
    whole = ops.auxiliary_mutation(m, 0.2, 1.0, 0.7, seed=9, offset=100, backend=name)
    first = ops.auxiliary_mutation(m[:, :40], 0.2, 1.0, 0.7, seed=9, offset=100, backend=name)
    second = ops.auxiliary_mutation(m[:, 40:], 0.2, 1.0, 0.7, seed=9, offset=100 + 40 * d, backend=name)
    assert torch.equal(whole, torch.cat([first, second], dim=1))
