"""DCPS (MATH.md, "DCPS"): exactness where the backward function is exact, behaviour on the
multimodal mixture benchmark against plain unconditional sampling, DPS and the released code's
options, and argument checks.

Every tolerance below comes from measured spread over seeds (numbers next to the assertions);
the measurements used 1 OpenMP thread on the 2-core CI box (the module pins torch to one thread:
these tensors are tiny and two threads only add contention).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from fkdiff import metrics
from fkdiff.diffusion import GaussianMixtureDenoiser, linear_schedule
from fkdiff.operators import DenseOperator
from fkdiff.problems.gmm import GaussianMixture, InverseProblem, dcps_inverse_problem, exact_posterior, gmm25_prior
from conftest import gen  # noqa: E402
from fkdiff.samplers import DCPS, DPS

ABAR = linear_schedule(1000)


pytestmark = pytest.mark.usefixtures("single_thread")


def gaussian_problem():
    """N(0, I) prior in D = 4, diagonal A (singular values 2, 1, 0.5; one free coordinate),
    sigma_y = 0.5: the PiGDM-like backward function is exact and the mean-field family holds the
    exact kernels."""
    D = 4
    A = torch.tensor([[2.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0.5, 0]], dtype=torch.float64)
    prior = GaussianMixture(torch.zeros(1, D, dtype=torch.float64), torch.ones(1, dtype=torch.float64), torch.eye(D, dtype=torch.float64))
    y = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    prob = InverseProblem(prior, DenseOperator(A), y, 0.5, torch.zeros(D, dtype=torch.float64))
    return prob, exact_posterior(prob), GaussianMixtureDenoiser(prior.means, prior.weights, ABAR)


def mixture_problem(dx: int, seed: int):
    """Table-1 generator: 25-component chi^2-weighted mixture, A ~ N(0, 1)^{1 x dx}, sigma_y = 1."""
    g = gen(seed)
    prior = gmm25_prior(dx, generator=g)
    prob = dcps_inverse_problem(prior, 1, 1.0, generator=g)
    return prob, exact_posterior(prob), prior.denoiser(ABAR)


# --------------------------------------------------------------------------------------------
# Exactness on a Gaussian prior
# --------------------------------------------------------------------------------------------


def test_gaussian_prior_matches_exact_posterior():
    """With an exact backward function the only errors left are the chain's and the variational
    fit's. Chain: ``kernel="moment"`` is the exact backward kernel of a N(0, I) prior, so 200
    steps carry no chain error (with the DDIM kernel 300 steps leave variance ratios ~0.97).
    Fit: a normalised step moves mu by exactly ``lr sigma sqrt(D)``, so the fit lands within that
    of the optimum only with enough steps: K = 10 at relative lr 0.03 (at the default K = 2 the
    second step mostly undoes the first, and the result depends on lr and n: at n = 300 lr 0.1
    gives mean errors up to 0.18 sd, lr 0.03 up to 0.56 sd with variance ratios up to 5).

    Measured (2000 samples, sampler seeds 0-2): SW to exact samples 0.025 / 0.040 / 0.025 against
    a noise floor of 0.026 +- 0.006 (20 repeats; threshold mean + 3 sd = 0.045); |mean error|
    <= 1.6 standard errors; variance ratios 0.945-1.074 (the weakly observed coordinate, s = 0.5,
    sits at ~0.95: a small bias of the fit; with the DDIM kernel at 300 steps it is ~0.92)."""
    prob, post, den = gaussian_problem()
    n = 2000
    sampler = DCPS(num_steps=200, gradient_steps=10, lr=0.03, kernel="moment", potential="pigdm")
    out = sampler(den, prob.operator, prob.y, prob.sigma_y, num_samples=n, generator=gen(0), progress=False)
    assert out.samples.shape == (n, 4) and torch.isfinite(out.samples).all()
    floor = metrics.noise_floor(post, n, repeats=10, generator=gen(1))
    sw = metrics.sliced_wasserstein(out.samples, post.sample(n, gen(2)), generator=gen(3))
    assert sw <= floor.sw_mean + 3 * floor.sw_sd, (sw, floor)
    s = out.samples.double()
    sd = torch.diagonal(post.cov).sqrt()
    z = (s.mean(0) - post.means[0]) / sd * math.sqrt(n)
    assert z.abs().max() < 4.0, z  # measured <= 1.6
    ratio = s.var(0) / sd**2
    assert ((ratio > 0.85) & (ratio < 1.15)).all(), ratio  # measured 0.945-1.074; sampling sd 0.03


# --------------------------------------------------------------------------------------------
# The mixture benchmark
# --------------------------------------------------------------------------------------------

# SW(DCPS default, posterior) / SW(exact prior samples, posterior), 500 samples, problems 0-2,
# default (plug-in potential): d=2: 0.32 0.07 0.10 (mean 0.16); d=4: 0.41 0.46 0.21 (0.36);
# d=10: 0.48 0.12 0.34 (0.31). With potential="pigdm": 0.18 / 0.50 / 0.47. Over problems 0-5 the
# per-problem ratio (pigdm) ranged 0.10-0.50 (d=2), 0.22-0.60 (d=4), 0.22-1.02 (d=10): single
# problems can be as bad as the prior at d=10, so the assertion is on the mean of three.
@pytest.mark.parametrize("dx", [2, 4, 10])
def test_mixture_better_than_unconditional(dx):
    ratios = []
    for seed in range(3):
        prob, post, den = mixture_problem(dx, seed)
        out = DCPS()(den, prob.operator, prob.y, prob.sigma_y, num_samples=500, generator=gen(4), progress=False)
        ref = post.sample(500, gen(1))
        dcps = metrics.sliced_wasserstein(out.samples, ref, generator=gen(3))
        prior = metrics.sliced_wasserstein(prob.prior.sample(500, gen(2)), ref, generator=gen(3))
        ratios.append(dcps / prior)
    assert sum(ratios) / 3 < 0.75, ratios  # measured means 0.16 / 0.36 / 0.31


def test_mixture_against_dps_and_released_options():
    """d_x = 10, d_y = 1, sigma_y = 1 (Table-1 generator), 300 steps in 3 blocks, M = 5, 1000
    samples; problems 0-3 (SW per problem; variance ratio = var along the observed direction /
    exact, median):

    ======================================  ========================  =====  ===========
    sampler                                 SW                        Δw     var ratio
    ======================================  ========================  =====  ===========
    unconditional DDPM chain                6.16 7.46 9.32 9.90       1.63   879
    DPS (zeta = 1)                          11.59 5.53 5.68 7.81      1.58   24
    DCPS potential="pigdm", relative 0.1    3.36 1.68 5.03 6.34       0.98   14
    DCPS default (plugin, relative 0.1)     2.44 0.94 3.19 3.69       0.58   1.8
    released (plugin, absolute lr 1,
    final="released")                       0.75 0.64 2.36 3.45       0.35   15
    PiGDM                                   1.07 0.11 3.12 3.77       0.63   0.93
    ======================================  ========================  =====  ===========

    Noise floor (1000 vs 1000 exact samples): SW 0.07-0.38. The released options score best in
    SW (unlike the authors' code, where DPS is often closer: our DPS has the per-sample norm) but
    are over-dispersed along the observed direction (15-27x with M = 5-50; M = 500: 16x) because
    their absolute lr = 1 moves the log-std by 1 per step at d = 10; with the relative lr the
    plug-in potential is not (0.87-1.8x). Assertions on problem 0 (measured: plugin 0.90x, released
    27x at M = 50; at M = 5 the numbers are in the table's first column), with a factor-3 margin."""
    prob, post, den = mixture_problem(10, 0)
    n = 1000
    args = (den, prob.operator, prob.y, prob.sigma_y)
    ref = post.sample(n, gen(1))

    def score(sampler):
        out = sampler(*args, num_samples=n, generator=gen(1), progress=False)
        sw = metrics.sliced_wasserstein(out.samples, ref, generator=gen(3))
        return sw, metrics.observed_spread(out.samples, post, prob.A)["variance_ratio"]

    ours_sw, ours_vr = score(DCPS(potential="plugin"))
    released_sw, released_vr = score(DCPS(potential="plugin", lr_mode="absolute", lr=1.0, final="released"))
    dps_sw, dps_vr = score(DPS())
    default_sw, _ = score(DCPS(potential="pigdm"))
    assert 0.3 < ours_vr < 3.0, ours_vr
    assert released_vr > 3 * ours_vr, (released_vr, ours_vr)
    assert ours_sw < dps_sw / 2 and default_sw < dps_sw, (ours_sw, default_sw, dps_sw)


# --------------------------------------------------------------------------------------------
# Bookkeeping, determinism, dtype, errors
# --------------------------------------------------------------------------------------------


def small_mixture():
    prob, post, den = mixture_problem(4, 0)
    return den, prob.operator, prob.y, prob.sigma_y


def test_counts_seed_batch_and_dtype():
    den, op, y, sy = small_mixture()
    s = DCPS(num_blocks=3, num_steps=30, langevin_steps=2, gradient_steps=2)
    a = s(den, op, y, sy, num_samples=9, generator=gen(5), progress=False)
    c = s(den, op, y, sy, num_samples=9, generator=gen(5), progress=False)
    assert a.samples.shape == (9, 4) and a.samples.dtype == torch.float32
    assert torch.equal(a.samples, c.samples)
    # L M TULA steps (forward + VJP); n prior-kernel calls; K fits per step except where the block's
    # target time is reached (beta = g_k: no network) and the deterministic step into t = 0.
    L, M, n, K = 3, 2, 30, 2
    assert a.nfe == L * M + n + K * (n - L)
    assert a.vjp == L * M + K * (n - L)
    # max_batch only changes the denoiser's BLAS blocking (last bits): compared in float64
    d = s(den, op, y, sy, num_samples=9, generator=gen(5), progress=False, dtype=torch.float64)
    b = s(den, op, y, sy, num_samples=9, generator=gen(5), progress=False, dtype=torch.float64, max_batch=4)
    assert d.samples.dtype == torch.float64
    torch.testing.assert_close(d.samples, b.samples, rtol=0, atol=1e-6)
    e = DCPS(num_steps=30, langevin_steps=2, final="released", kernel="moment", potential="dps")
    assert torch.isfinite(e(den, op, y, sy, num_samples=3, generator=gen(1), progress=False).samples).all()


def test_sigma_zero_warns_and_runs():
    den, op, y, _ = small_mixture()
    with pytest.warns(UserWarning, match="sigma_min"):
        out = DCPS(num_steps=12, langevin_steps=1)(den, op, y, 0.0, num_samples=3, generator=gen(0), progress=False)
    assert torch.isfinite(out.samples).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DCPS(num_steps=12, langevin_steps=1)(den, op, y, 0.5, num_samples=2, generator=gen(0), progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_blocks=0), "num_blocks"),
        (dict(num_blocks=5, num_steps=4), "num_blocks"),
        (dict(num_steps=2.5), "num_steps"),
        (dict(langevin_steps=-1), "langevin_steps"),
        (dict(gamma=0.0), "gamma"),
        (dict(gamma=float("nan")), "gamma"),
        (dict(gradient_steps=-1), "gradient_steps"),
        (dict(lr=-0.1), "lr"),
        (dict(lr_mode="adam"), "lr_mode"),
        (dict(potential="exact"), "potential"),
        (dict(sigma_min=0.0), "sigma_min"),
        (dict(final="x0"), "final"),
        (dict(kernel="ddpm"), "kernel"),
        (dict(max_batch=0), "max_batch"),
    ],
)
def test_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DCPS(**kwargs)


def test_bad_inputs():
    den, op, y, sy = small_mixture()
    s = DCPS(num_steps=6, langevin_steps=1)
    with pytest.raises(ValueError, match="y: expected shape"):
        s(den, op, torch.zeros(2), sy, progress=False)
    with pytest.raises(ValueError, match="sigma_y"):
        s(den, op, y, -1.0, progress=False)
    with pytest.raises(ValueError, match="num_samples"):
        s(den, op, y, sy, num_samples=0, progress=False)
