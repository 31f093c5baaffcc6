"""The compiled CPU path of the mixture denoiser (``fkdiff._C.cpu_mixture_mean``) against its
PyTorch twin (addmm + softmax + addmm, run in float64): odd sizes, zero weights, NaN rows,
aliasing, chunk and thread invariance."""

import math

import pytest
import torch

from fkdiff.diffusion import GaussianMixtureDenoiser, ddim_step, linear_schedule

ABAR = linear_schedule(1000)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def mixture(K, D, seed=0, dtype=torch.float64, zero=()):
    means = 6 * torch.randn(K, D, generator=gen(seed), dtype=dtype)
    weights = torch.rand(K, generator=gen(seed + 1), dtype=dtype) + 0.05
    for k in zero:
        weights[k] = 0.0
    return GaussianMixtureDenoiser(means, weights, ABAR)


def torch_path(den, x, t, beta, alpha, monkeypatch):
    """The PyTorch sequence in float64 (FKDIFF_BACKEND=torch routes around the kernel)."""
    with monkeypatch.context() as m:
        m.setenv("FKDIFF_BACKEND", "torch")
        return den._mixture_mean(x.double(), t, beta, alpha)


def test_compiled_path_is_taken_on_cpu(monkeypatch):
    """The test below would pass vacuously if the kernel were never called."""
    from fkdiff import _C

    calls = []
    real = _C.cpu_mixture_mean
    monkeypatch.setattr(_C, "cpu_mixture_mean", lambda *a: calls.append(a) or real(*a))
    den = mixture(5, 3)
    den.predict(torch.randn(9, 3, dtype=torch.float64), 100)
    assert len(calls) == 1
    with monkeypatch.context() as m:
        m.setenv("FKDIFF_BACKEND", "torch")
        den.predict(torch.randn(9, 3, dtype=torch.float64), 100)
    assert len(calls) == 1


@pytest.mark.parametrize("K,D", [(1, 1), (3, 2), (4, 5), (5, 3), (25, 10), (7, 17), (25, 100)])
@pytest.mark.parametrize("R", [1, 7, 8, 9, 17, 1001])
def test_matches_float64_twin(K, D, R, monkeypatch):
    den = mixture(K, D, seed=K * 100 + D)
    x = 3 * torch.randn(R, D, generator=gen(R), dtype=torch.float64)
    for t in (1, 250, 1000):
        a = math.sqrt(float(ABAR[t]))
        ref = torch_path(den, x, t, a, 1 - float(ABAR[t]), monkeypatch)
        got64 = den._mixture_mean(x, t, a, 1 - float(ABAR[t]))
        assert torch.allclose(got64, ref, atol=1e-11, rtol=1e-11)
        got32 = den._mixture_mean(x.float(), t, a, 1 - float(ABAR[t]))  # means cast to float32 inside
        # float32: logits of size ~|x| |mu| ~ 1e2 carry ~1e-5 absolute error into the softmax
        scale = 1 + ref.abs().max()
        assert (got32.double() - ref).abs().max() <= 2e-5 * scale


def test_zero_weights_nan_rows_and_extremes(monkeypatch):
    """Components of weight zero (bias -inf) never contribute; a NaN row stays in its row; huge
    inputs (logits ~1e5) neither overflow nor underflow the softmax."""
    den = mixture(6, 4, zero=(0, 3))
    x = 2 * torch.randn(13, 4, generator=gen(5), dtype=torch.float64)
    x[2] = 1e4
    x[5, 1] = float("nan")
    got = den._mixture_mean(x, 10, 0.9, 0.1)
    ref = torch_path(den, x, 10, 0.9, 0.1, monkeypatch)
    assert torch.isnan(got[5]).all() and torch.isfinite(got[torch.arange(13) != 5]).all()
    keep = torch.arange(13) != 5
    assert torch.allclose(got[keep], ref[keep], atol=1e-9, rtol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunks_threads_and_aliasing_change_no_bit(dtype):
    den = mixture(25, 10, dtype=dtype)
    x = 5 * torch.randn(4099, 10, generator=gen(7), dtype=dtype)
    step = ddim_step(float(ABAR[400]), float(ABAR[390]), eta=1.0)
    whole = torch.empty_like(x)
    den.ddim_mean_into(x, 400, step, whole)
    parts = torch.cat([den._mixture_mean(x[s:e], 400, 0.3, 0.6) for s, e in ((0, 5), (5, 1000), (1000, 4099))])
    assert torch.equal(parts, den._mixture_mean(x, 400, 0.3, 0.6))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.empty_like(x)
        den.ddim_mean_into(x, 400, step, one)
        torch.set_num_threads(2)
        two = torch.empty_like(x)
        den.ddim_mean_into(x, 400, step, two)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, whole) and torch.equal(two, whole)
    y = x.clone()
    den._mixture_mean(y, 400, 0.3, 0.6, out=y)  # out is x: every row read before it is written
    assert torch.equal(y, den._mixture_mean(x, 400, 0.3, 0.6))


def test_non_contiguous_and_autograd_take_the_torch_path():
    den = mixture(5, 6)
    x = torch.randn(6, 11, generator=gen(9), dtype=torch.float64).T  # (11, 6), strided
    assert not x.is_contiguous()
    assert torch.allclose(den._mixture_mean(x, 50, 0.5, 0.5), den._mixture_mean(x.contiguous(), 50, 0.5, 0.5),
                          atol=1e-13)
    xr = x.contiguous().requires_grad_(True)
    x0, _ = den.predict(xr, 50)
    (g,) = torch.autograd.grad(x0.sum(), xr)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cols", [1, 3, 4, 9, 10])
def test_first_columns_and_responsibilities(cols, dtype, monkeypatch):
    """``cols`` outputs only the first coordinates (the observed ones, for DCPS / DPS / PiGDM) and
    ``with_resp`` returns the softmax the VJP reuses: both against the float64 twin."""
    den = mixture(25, 10, seed=3)
    x = 4 * torch.randn(37, 10, generator=gen(11), dtype=torch.float64)
    got, resp = den._mixture_mean(x.to(dtype), 321, 0.4, 0.55, cols=cols, with_resp=True)
    with monkeypatch.context() as m:
        m.setenv("FKDIFF_BACKEND", "torch")
        ref, ref_resp = den._mixture_mean(x, 321, 0.4, 0.55, cols=cols, with_resp=True)
    tol = 1e-11 if dtype == torch.float64 else 2e-5
    assert got.shape == (37, cols) and resp.shape == (37, 25)
    assert (got.double() - ref).abs().max() <= tol * (1 + ref.abs().max())
    assert (resp.double() - ref_resp).abs().max() <= tol
    assert torch.allclose(resp.sum(-1).double(), torch.ones(37, dtype=torch.float64), atol=10 * tol)
    x0, eps, _ = den.predict_with_vjp(x.to(dtype), 321, cols=cols)
    full0, fulle = den.predict(x.to(dtype), 321)
    assert torch.equal(x0, full0[:, :cols]) and torch.allclose(eps, fulle[:, :cols], atol=tol, rtol=tol)
