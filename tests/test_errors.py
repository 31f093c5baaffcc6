"""The front door: clear TypeError/ValueError naming the argument, never a crash or a wrong answer."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fkdiff import ops


def test_unsupported_dtype_is_a_type_error():
    with pytest.raises(TypeError, match="log_weights: dtype float16"):
        ops.resample(torch.zeros(5, dtype=torch.float16))
    with pytest.raises(TypeError, match="log_weights: dtype int64"):
        ops.resample(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(TypeError, match="log_weights: expected a torch.Tensor"):
        ops.resample([0.0, 1.0])
    with pytest.raises(TypeError, match="x: dtype"):
        ops.gaussian_log_potential(torch.zeros(3, 2, dtype=torch.int32), 0.0, 1.0)
    with pytest.raises(TypeError, match="grad: dtype"):
        ops.tamed_langevin(torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.float64), 0.1, seed=0)
    with pytest.raises(TypeError, match="ancestors: dtype"):
        ops.auxiliary_mutation(torch.zeros(1, 3, 2), 0.0, 0.0, 1.0, ancestors=torch.zeros(1, 3), seed=0)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="log_weights: expected 1 or 2 dimensions"):
        ops.resample(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="log_weights: needs at least one particle"):
        ops.resample(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="x: shape"):
        ops.resample_rows(torch.zeros(4, 3), torch.zeros(5))
    with pytest.raises(ValueError, match="target: expected 3 entries"):
        ops.gaussian_log_potential(torch.zeros(4, 3), torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="var: expected shape"):
        ops.gaussian_log_potential(torch.zeros(2, 4, 3), 0.0, torch.ones(5, 3))
    with pytest.raises(ValueError, match="grad: shape"):
        ops.tamed_langevin(torch.zeros(3, 2), torch.zeros(3, 3), 0.1, seed=0)
    with pytest.raises(ValueError, match="ancestors: expected 2 populations"):
        ops.auxiliary_mutation(torch.zeros(2, 3, 2), 0.0, 0.0, 1.0, ancestors=torch.zeros(3, 3, dtype=torch.int64), seed=0)
    with pytest.raises(ValueError, match="u: expected one offset per population"):
        ops.resample(torch.zeros(3, 4), u=torch.zeros(2))
    with pytest.raises(ValueError, match="u: expected a number in"):
        ops.resample(torch.zeros(4), u=1.5)
    with pytest.raises(ValueError, match="scheme: unknown"):
        ops.resample(torch.zeros(4), "bogus")
    with pytest.raises(ValueError, match="u: only the systematic"):
        ops.resample(torch.zeros(4), "multinomial", u=0.5)
    with pytest.raises(ValueError, match="gamma"):
        ops.tamed_langevin(torch.zeros(3, 2), torch.zeros(3, 2), -1.0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        ops.normal(3, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        ops.normal(3, seed=2**64)


def test_out_is_checked():
    lw = torch.zeros(3, 8)
    with pytest.raises(ValueError, match="out: expected shape"):
        ops.resample(lw, out=torch.empty(3, 7, dtype=torch.int64))
    with pytest.raises(TypeError, match="out: expected dtype"):
        ops.resample(lw, out=torch.empty(3, 8))
    with pytest.raises(ValueError, match="out: must be contiguous"):
        ops.resample(lw, out=torch.empty(8, 3, dtype=torch.int64).t())
    m = torch.zeros(1, 4, 2)
    with pytest.raises(ValueError, match="out: must not share memory"):
        ops.auxiliary_mutation(m, 0.0, 0.0, 1.0, ancestors=torch.zeros(1, 4, dtype=torch.int64), seed=0, out=m)


def test_non_contiguous_inputs_are_copied():
    lw = torch.randn(8, 3).t()  # (3, 8), not contiguous
    assert not lw.is_contiguous()
    got = ops.resample(lw, u=0.3)
    expect = ops.resample(lw.contiguous(), u=0.3)
    assert torch.equal(got, expect)
    x = torch.randn(4, 6, 2).transpose(1, 2)  # (4, 2, 6)
    pot = ops.gaussian_log_potential(x, 0.0, 1.0)
    assert torch.allclose(pot, -(x**2).sum(-1) / 2)


@pytest.mark.parametrize(
    "values, message",
    [
        ([0.0, math.nan, 1.0], "log_weights: contains NaN"),
        ([0.0, math.inf, 1.0], r"log_weights: contains \+inf"),
        ([-math.inf, -math.inf], "all -inf"),
    ],
)
def test_bad_weights_raise_at_once_on_cpu(values, message):
    lw = torch.tensor(values)
    for call in (lambda: ops.resample(lw), lambda: ops.ess(lw), lambda: ops.log_normalize(lw)):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=message):
        ops.resample_rows(torch.zeros(len(values), 2), lw)


def test_flags_defer_and_accumulate():
    flags = ops.new_flags()
    anc = ops.resample(torch.tensor([[0.0, math.nan], [0.0, 1.0]]), u=0.5, flags=flags)
    assert anc[0].tolist() == [0, 1]  # a flagged population keeps identity ancestors
    ops.resample(torch.full((1, 3), -math.inf), u=0.5, flags=flags)
    with pytest.raises(ValueError) as info:
        ops.check_flags(flags)
    assert "NaN" in str(info.value) and "all -inf" in str(info.value)
    ops.check_flags(flags)  # read once: cleared


def test_forced_backend_errors(monkeypatch):
    with pytest.raises(ValueError, match="backend='nope' is not a backend"):
        ops.resample(torch.zeros(3), backend="nope")
    if not torch.cuda.is_available():
        with pytest.raises(ops.BackendUnavailableError, match="cuda"):
            ops.resample(torch.zeros(3), backend="cuda")
    monkeypatch.setenv("FKDIFF_BACKEND", "torch")
    assert ops.resample(torch.zeros(3), u=0.5).tolist() == [0, 1, 2]
    monkeypatch.setenv("FKDIFF_BACKEND", "bogus")
    with pytest.raises(ValueError, match="FKDIFF_BACKEND='bogus'"):
        ops.resample(torch.zeros(3))


ARRAYS = st.lists(st.sampled_from([0.0, 1.0, -1.0, 1e30, -1e30, math.nan, math.inf, -math.inf, 5e-324]), min_size=0, max_size=40)


@given(
    values=ARRAYS,
    B=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.int32]),
    transpose=st.booleans(),
    scheme=st.sampled_from(list(ops.SCHEMES) + ["?"]),
    d=st.integers(0, 3),
)
def test_fuzz_resampling_front_door(values, B, dtype, transpose, scheme, d):
    """Whatever comes in: a valid answer or a TypeError/ValueError, never a crash or garbage."""
    lw = torch.tensor(values * B, dtype=torch.float64).reshape(B, -1) if values else torch.zeros(B, 0)
    lw = lw.to(dtype) if dtype.is_floating_point else lw.to(torch.int64).to(dtype) if torch.isfinite(lw).all() else lw.to(torch.float32)
    if transpose and lw.shape[1] > 1:
        lw = lw.t().contiguous().t()
    try:
        if d:
            rows, anc = ops.resample_rows(torch.randn(*lw.shape, d), lw, scheme, generator=torch.Generator().manual_seed(0))
        else:
            anc = ops.resample(lw, scheme, generator=torch.Generator().manual_seed(0))
    except (TypeError, ValueError):
        return
    N = lw.shape[1]
    assert anc.shape == lw.shape and int(anc.min()) >= 0 and int(anc.max()) < N
    W = torch.softmax(lw.double(), 1)
    assert bool((W.gather(1, anc) > 0).all()), "a zero-weight particle was selected"


@given(
    N=st.integers(0, 6),
    d=st.integers(0, 4),
    anc_values=st.lists(st.integers(-3, 9), min_size=0, max_size=6),
    gain=st.sampled_from([0.0, 0.5, 1.0, math.nan, math.inf]),
    gamma=st.sampled_from([1e-3, 0.0, -1.0, math.inf, math.nan]),
)
def test_fuzz_mutation_and_langevin_front_door(N, d, anc_values, gain, gamma):
    m = torch.randn(1, N, d)
    anc = torch.tensor([anc_values], dtype=torch.int64) if anc_values else None
    try:
        out = ops.auxiliary_mutation(m, gain, 0.0, 1.0, ancestors=anc, seed=1)
        assert out.shape == (1, anc.shape[1] if anc is not None else N, d)
    except (TypeError, ValueError):
        pass
    try:
        out = ops.tamed_langevin(m, m, gamma, seed=2)
        assert out.shape == m.shape
    except (TypeError, ValueError):
        pass


VALUES = st.sampled_from([0.0, 1.0, -2.0, 1e30, math.nan, math.inf, -math.inf])


@given(
    B=st.integers(0, 2),
    N=st.integers(0, 5),
    d=st.sampled_from([0, 1, 3, 4, 70]),
    coords=st.one_of(st.none(), st.integers(-2, 80), st.just(slice(1, 3)), st.just("bad")),
    var=st.one_of(VALUES, st.just("vec"), st.just("wrong-length")),
    x_value=VALUES,
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
    transpose=st.booleans(),
    accumulate=st.booleans(),
    two=st.booleans(),
)
def test_fuzz_potential_front_door(B, N, d, coords, var, x_value, dtype, transpose, accumulate, two):
    """The potential and the fused MCGdiff weight: a (B, N) answer, NaN only where the inputs say
    so (and then flagged), or a TypeError/ValueError — never a crash."""
    x = torch.randn(B, N, d).to(dtype)
    if x.numel():
        x.view(-1)[0] = x_value
    if transpose and d > 1 and N > 1:
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
    m = d if coords is None or not isinstance(coords, int) else coords
    if var == "vec":
        v = torch.rand(max(m, 0), dtype=dtype) + 0.1
    elif var == "wrong-length":
        v = torch.ones(max(m, 0) + 1, dtype=dtype)
    else:
        v = var
    flags = ops.new_flags()
    try:
        if two:
            out = ops.mcgdiff_log_weight(x, x, 0.5, v, -0.5, v, coords=coords, flags=flags)
        else:
            base = torch.zeros(B, N, dtype=dtype)
            out = ops.gaussian_log_potential(x, 0.5, v, coords=coords, out=base if accumulate else None,
                                             accumulate=accumulate, flags=flags)
    except (TypeError, ValueError):
        return
    assert out.shape == (B, N)
    if bool(torch.isnan(out).any()):
        with pytest.raises(ValueError):
            ops.check_flags(flags)


@given(
    shape=st.sampled_from([(0, 3), (1, 1), (2, 5), (1, 2, 70), (3,), (2, 0, 4)]),
    other=st.sampled_from(["same", "shape", "dtype", "transposed", "alias"]),
    grad_value=VALUES,
    var=st.sampled_from([1.0, 0.0, -1.0, math.nan, math.inf]),
    lr=st.sampled_from([0.1, 0.0, -0.5, math.nan]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.float16]),
)
def test_fuzz_variational_front_door(shape, other, grad_value, var, lr, dtype):
    """DCPS's Gaussian-fit kernel: an answer, a flagged/raised non-finite norm, or a clear error."""
    mu, log_std, m, xi = (torch.randn(shape).to(dtype) for _ in range(4))
    grad = torch.full(shape, grad_value).to(dtype)
    if other == "shape":
        m = torch.randn(*shape, 2).to(dtype)
    elif other == "dtype":
        m = m.to(torch.float64 if dtype != torch.float64 else torch.float32)
    elif other == "transposed" and len(shape) >= 2 and shape[-1] > 1 and shape[-2] > 1:
        mu = mu.transpose(-1, -2).contiguous().transpose(-1, -2)
    elif other == "alias":
        xi = mu
    try:
        out = ops.variational_update(mu, log_std, m, grad, xi, var, lr, lr, seed=3)
    except (TypeError, ValueError):
        return
    assert out.shape == mu.shape
    assert bool(torch.isfinite(out).all())
