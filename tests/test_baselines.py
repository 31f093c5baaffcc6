"""DPS, PiGDM, DDRM (MATH.md, "Baselines"): finite samples of the right shape on every problem
type, DPS's per-sample norm at a zero residual, DDRM's noiseless observed coordinates, determinism
(same seed, any ``max_batch``), dtype, counts and argument checks."""

from __future__ import annotations

import pytest
import torch

from fkdiff.diffusion import Denoiser, linear_schedule
from fkdiff.operators import DenseOperator
from fkdiff.problems.gmm import dcps_inverse_problem, gmm25_prior, mcgdiff_inverse_problem
from conftest import gen  # noqa: E402
from fkdiff.samplers import DDRM, DPS, PiGDM

ABAR = linear_schedule(1000)
SAMPLERS = {
    "dps": lambda **kw: DPS(num_steps=40, **kw),
    "pigdm": lambda **kw: PiGDM(num_steps=40, **kw),
    "pigdm-dcps": lambda **kw: PiGDM(num_steps=40, scaling="dcps", **kw),
    "ddrm": lambda **kw: DDRM(num_steps=40, **kw),
    "ddrm-etac1": lambda **kw: DDRM(num_steps=40, eta_c=1.0, **kw),
}


pytestmark = pytest.mark.usefixtures("single_thread")


def problem(kind: str):
    g = gen(3)
    if kind == "dcps":  # A ~ N(0, 1)^{1 x 6}, sigma_y = 1
        prior = gmm25_prior(6, generator=g)
        p = dcps_inverse_problem(prior, 1, 1.0, generator=g)
        return prior.denoiser(ABAR), p.operator, p.y, p.sigma_y
    if kind == "mcgdiff":  # orthogonal U, V, s ~ U(0, 1), d_y = 2
        prior = gmm25_prior(5, generator=g)
        p = mcgdiff_inverse_problem(prior, 2, generator=g)
        return prior.denoiser(ABAR), p.operator, p.y, p.sigma_y
    if kind == "noiseless":
        prior = gmm25_prior(4, generator=g)
        p = dcps_inverse_problem(prior, 2, 0.0, generator=g)
        return prior.denoiser(ABAR), p.operator, p.y, 0.0
    if kind == "rank-deficient":  # d_y = 3 > rank 2: part of y lies outside the range of A
        prior = gmm25_prior(4, generator=g)
        A = torch.randn(2, 4, generator=g, dtype=torch.float64)
        A = torch.cat([A, A[:1] + A[1:]])
        x = prior.sample(1, g)[0]
        return prior.denoiser(ABAR), DenseOperator(A), A @ x + 0.3 * torch.randn(3, generator=g, dtype=torch.float64), 0.3
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["dcps", "mcgdiff", "noiseless", "rank-deficient"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_finite_samples_of_the_right_shape(name, kind):
    den, op, y, sy = problem(kind)
    out = SAMPLERS[name]()(den, op, y, sy, num_samples=16, generator=gen(0), progress=False)
    assert out.samples.shape == (16, op.dim_x)
    assert torch.isfinite(out.samples).all()
    assert out.nfe == 40 and out.vjp == (0 if name.startswith("ddrm") else 40)
    assert out.seconds > 0


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_same_seed_same_samples_any_max_batch_and_float64(name):
    den, op, y, sy = problem("dcps")
    s = SAMPLERS[name]()
    a = s(den, op, y, sy, num_samples=11, generator=gen(7), progress=False)
    b = s(den, op, y, sy, num_samples=11, generator=gen(7), progress=False)
    assert torch.equal(a.samples, b.samples)
    assert not torch.equal(a.samples, s(den, op, y, sy, num_samples=11, generator=gen(8), progress=False).samples)
    # max_batch changes only the BLAS blocking of the denoiser (last-bit differences), which DPS's
    # unstable guidance amplifies in float32 (measured 5e-3 after 5 steps, O(1) after 40); in
    # float64 the largest difference measured is 8e-9
    d = s(den, op, y, sy, num_samples=11, generator=gen(7), progress=False, dtype=torch.float64)
    c = s(den, op, y, sy, num_samples=11, generator=gen(7), progress=False, dtype=torch.float64, max_batch=3)
    assert d.samples.dtype == torch.float64 and torch.isfinite(d.samples).all()
    torch.testing.assert_close(d.samples, c.samples, rtol=0, atol=1e-6)


class ZeroDenoiser(Denoiser):
    """x0hat = 0 (through x, so autograd has a path): with y = 0 the residual is exactly zero."""

    def predict(self, x, t):
        abar = float(self.alphas_cumprod[t])
        x0 = 0.0 * x
        return x0, (x - abar**0.5 * x0) / (1 - abar) ** 0.5


def test_dps_zero_residual_gives_no_nan():
    """The authors' code divides 0 by 0 here (and its batch-wide norm spreads the NaN)."""
    op = DenseOperator(torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64))
    out = DPS(num_steps=10)(ZeroDenoiser(ABAR), op, torch.zeros(1), 0.5, num_samples=4, generator=gen(0), progress=False)
    assert torch.isfinite(out.samples).all()
    # and the per-sample norm: one sample's residual does not scale another's step
    den, op, y, sy = problem("dcps")
    kw = dict(num_samples=6, progress=False, dtype=torch.float64)
    full = DPS(num_steps=20)(den, op, y, sy, generator=gen(1), **kw).samples
    part = DPS(num_steps=20)(den, op, y, sy, generator=gen(1), max_batch=1, **kw).samples
    torch.testing.assert_close(full, part, rtol=0, atol=1e-6)


def test_ddrm_noiseless_reproduces_observed_coordinates():
    """Inpainting-like: A selects coordinates 0 and 2 of 4; with sigma_y = 0 and eta_b = 1 the
    observed coordinates land on y."""
    g = gen(2)
    prior = gmm25_prior(4, generator=g)
    A = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1.0, 0]], dtype=torch.float64)
    x = prior.sample(1, g)[0]
    y = A @ x
    out = DDRM(num_steps=50)(prior.denoiser(ABAR), DenseOperator(A), y, 0.0, num_samples=20, generator=gen(0), progress=False)
    torch.testing.assert_close(out.samples[:, [0, 2]], y.float().expand(20, 2), rtol=0, atol=1e-4)
    assert out.samples[:, [1, 3]].std(0).min() > 0  # the free coordinates still vary


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: DPS(num_steps=0), "num_steps"),
        (lambda: DPS(zeta=-1.0), "zeta"),
        (lambda: DPS(eta=1.5), "eta"),
        (lambda: DPS(kernel="x"), "kernel"),
        (lambda: PiGDM(eta=-0.1), "eta"),
        (lambda: PiGDM(scaling="x"), "scaling"),
        (lambda: PiGDM(num_steps=True), "num_steps"),
        (lambda: DDRM(eta=2.0), "eta"),
        (lambda: DDRM(eta_b=-0.5), "eta_b"),
        (lambda: DDRM(eta_c=1.5), "eta_c"),
        (lambda: DDRM(max_batch=0), "max_batch"),
    ],
)
def test_bad_hyper_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("name", ["dps", "pigdm", "ddrm"])
def test_bad_inputs(name):
    den, op, y, sy = problem("dcps")
    s = SAMPLERS[name]()
    with pytest.raises(ValueError, match="y: expected shape"):
        s(den, op, torch.zeros(3), sy, progress=False)
    with pytest.raises(ValueError, match="sigma_y"):
        s(den, op, y, -0.1, progress=False)
    with pytest.raises(ValueError, match="num_samples"):
        s(den, op, y, sy, num_samples=0, progress=False)
