"""Every formula on its own: DDIM/bridge coefficients, the closed-form mixture denoiser, the
exact posterior and evidence, check_svd, sliced Wasserstein."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from fkdiff import metrics
from fkdiff.diffusion import (
    EpsilonDenoiser,
    GaussianMixtureDenoiser,
    VDenoiser,
    X0Denoiser,
    check_schedule,
    cosine_schedule,
    ddim_step,
    linear_schedule,
    reversed_linear_schedule,
    time_grid,
)
from fkdiff.operators import DenseOperator, check_svd
from fkdiff.problems.gmm import dcps_inverse_problem, exact_posterior, gmm25_prior, log_evidence, mcgdiff_inverse_problem

from conftest import gen

ABAR = linear_schedule(1000)


def test_schedules():
    assert ABAR.shape == (1001,) and ABAR[0] == 1 and bool((ABAR[1:] < ABAR[:-1]).all())
    assert torch.isclose(ABAR[1], torch.tensor(1 - 1e-4, dtype=torch.float64))
    rev = reversed_linear_schedule()
    assert rev.shape == (1000,) and torch.isclose(rev[1], torch.tensor(1 - 0.02, dtype=torch.float64))
    assert cosine_schedule()[-1] < 1e-3
    diffusers_table = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    assert torch.equal(check_schedule(diffusers_table), ABAR)  # the leading 1 is prepended
    with pytest.raises(ValueError, match="non-increasing"):
        check_schedule(torch.tensor([1.0, 0.5, 0.7]))


def test_time_grids():
    g = time_grid(ABAR, 100)
    assert g[0] == 0 and g[-1] == 1000 and g.numel() == 101 and bool((g[1:] > g[:-1]).all())
    s = time_grid(ABAR, 50, "sqrt_abar")
    roots = ABAR[s].sqrt()
    assert s[0] == 0 and s[-1] == 1000 and bool((s[1:] > s[:-1]).all())
    # uniform in sqrt(abar): consecutive drops are close to equal
    drops = roots[:-1] - roots[1:]
    assert float(drops.max()) < 2.5 * float(drops.median())
    assert {3, 7} <= set(time_grid(ABAR, 10, insert=[3, 7]).tolist())


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_coefficients_against_the_bridge(eta):
    """eta = 1 is the DDPM bridge q(x_t' | x_0, x_t): mean coefficients and variance from the
    Gaussian conditioning of (x_t', x_t) given x_0, derived directly."""
    t, tp = 500, 400
    a, ap = float(ABAR[t]), float(ABAR[tp])
    step = ddim_step(a, ap, eta)
    # x_t = sqrt(a/ap) x_tp + sqrt(1 - a/ap) e'  =>  Var(x_tp | x0, x_t) = (1-ap)(1-a/ap)/(1-a)
    bridge_var = (1 - ap) * (1 - a / ap) / (1 - a)
    assert math.isclose(step.sigma**2, eta**2 * bridge_var, rel_tol=1e-12)
    # marginal consistency: x_t' must have variance 1 - ap around sqrt(ap) x0 when x0hat is exact
    assert math.isclose(step.c_eps**2 + step.sigma**2, 1 - ap, rel_tol=1e-12)
    assert math.isclose(step.c_x0, math.sqrt(ap), rel_tol=1e-12)
    if eta == 1.0:
        # bridge mean coefficients on x0 and x_t
        c0 = math.sqrt(ap) * (1 - a / ap) / (1 - a)
        cx = math.sqrt(a / ap) * (1 - ap) / (1 - a)
        assert math.isclose(step.c_x0_total, c0, rel_tol=1e-10)
        assert math.isclose(step.c_xt, cx, rel_tol=1e-10)
    assert ddim_step(a, 1.0, eta).sigma == 0.0  # into t' = 0 the jump is deterministic


def test_mixture_denoiser_against_autograd():
    means = 4 * torch.randn(7, 5, generator=gen(0), dtype=torch.float64)
    den = GaussianMixtureDenoiser(means, torch.rand(7, generator=gen(1), dtype=torch.float64), ABAR)
    x = torch.randn(11, 5, generator=gen(2), dtype=torch.float64, requires_grad=True)
    for t in (1, 10, 300, 1000):
        (score,) = torch.autograd.grad(den.log_prob(x, t).sum(), x)
        assert torch.allclose(den.score(x.detach(), t), score, atol=1e-9, rtol=1e-9)
        x0, eps = den.denoise(x.detach(), t)
        assert torch.allclose(math.sqrt(ABAR[t]) * x0 + math.sqrt(1 - ABAR[t]) * eps, x.detach(), atol=1e-12)


def test_mixture_vjp_and_ddim_mean_against_autograd():
    """The closed forms the samplers use instead of tracing the mixture: ``predict_with_vjp``'s
    J^T w (cotangent on the first m coordinates) and ``ddim_mean_into``, against autograd of
    ``predict`` and the two-output DDIM mean."""
    from fkdiff.diffusion import ddim_step

    means = 4 * torch.randn(7, 5, generator=gen(0), dtype=torch.float64)
    den = GaussianMixtureDenoiser(means, torch.rand(7, generator=gen(1), dtype=torch.float64), ABAR)
    x = torch.randn(11, 5, generator=gen(2), dtype=torch.float64)
    for t in (1, 10, 300, 1000):
        for m in (0, 2, 5):
            w = torch.randn(11, m, generator=gen(3 + m), dtype=torch.float64)
            xr = x.clone().requires_grad_(True)
            x0_ref, _ = den.predict(xr, t)
            (ref,) = torch.autograd.grad(x0_ref[:, :m], xr, grad_outputs=w) if m else (torch.zeros_like(x),)
            x0, eps, vjp = den.predict_with_vjp(x, t)
            assert torch.allclose(x0, x0_ref.detach(), atol=1e-12)
            assert torch.allclose(vjp(w), ref, atol=1e-10, rtol=1e-10)
            # plus a linear combination of x0hat and x, and outputs on the first m columns only
            assert torch.allclose(vjp(w, 0.7, -1.3), ref + 0.7 * x0 - 1.3 * x, atol=1e-10, rtol=1e-10)
            x0m, epsm, vjpm = den.predict_with_vjp(x, t, cols=m)
            assert torch.allclose(x0m, x0[:, :m], atol=1e-12) and torch.allclose(epsm, eps[:, :m], atol=1e-12)
            assert torch.allclose(vjpm(w, 0.7, -1.3), ref + 0.7 * x0 - 1.3 * x, atol=1e-10, rtol=1e-10)
        step = ddim_step(float(ABAR[t]), float(ABAR[max(t - 37, 0)]), eta=0.7)
        out = torch.empty_like(x)
        den.ddim_mean_into(x, t, step, out)
        assert torch.allclose(out, step.mean(*den.predict(x, t)), atol=1e-10, rtol=1e-10)


def test_value_and_grad_closed_form_matches_autograd():
    """Guidance gradients through the mixture: the closed-form VJP path against tracing the
    denoiser (an objective on x, x0hat and epshat of the observed coordinates)."""
    from fkdiff.samplers._guidance import value_and_grad
    from fkdiff.samplers.base import DenoiserCalls

    means = 4 * torch.randn(7, 6, generator=gen(0), dtype=torch.float64)
    den = GaussianMixtureDenoiser(means, torch.rand(7, generator=gen(1), dtype=torch.float64), ABAR)

    class Traced(GaussianMixtureDenoiser):  # the same mixture, without the closed form
        has_vjp = False

    traced = Traced(means, den.log_weights.exp(), ABAR)
    x = torch.randn(9, 6, generator=gen(2), dtype=torch.float64)
    target = torch.randn(3, generator=gen(3), dtype=torch.float64)

    def objective(xo, x0o, epso):
        return -((target - 0.3 * x0o - 0.2 * epso) ** 2).sum(-1) + (xo**3).sum(-1)

    for t in (5, 400):
        for max_batch in (None, 4):
            got = value_and_grad(DenoiserCalls(den, max_batch, (6,)), x, t, objective, 3)
            ref = value_and_grad(DenoiserCalls(traced, max_batch, (6,)), x, t, objective, 3)
            for a, b in zip(got, ref):
                assert torch.allclose(a, b, atol=1e-10, rtol=1e-10)
            # a score folded in, the full outputs not formed
            plus = (0.4, -2.0)
            val, g, x0, eps = value_and_grad(DenoiserCalls(den, max_batch, (6,)), x, t, objective, 3, outputs=False, plus=plus)
            assert x0 is None and eps is None
            assert torch.allclose(g, ref[1] + 0.4 * ref[2] - 2.0 * x, atol=1e-10, rtol=1e-10)
            traced_plus = value_and_grad(DenoiserCalls(traced, max_batch, (6,)), x, t, objective, 3, plus=plus)[1]
            assert torch.allclose(g, traced_plus, atol=1e-10, rtol=1e-10)
            for d in (den, traced):  # into a caller's buffer
                buf = torch.full_like(x, math.nan)
                got = value_and_grad(DenoiserCalls(d, max_batch, (6,)), x, t, objective, 3, plus=plus, out=buf)[1]
                assert got.data_ptr() == buf.data_ptr() and torch.allclose(buf, traced_plus, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cls, to_net", [
    (EpsilonDenoiser, lambda x0, eps, a: eps),
    (X0Denoiser, lambda x0, eps, a: x0),
    (VDenoiser, lambda x0, eps, a: math.sqrt(a) * eps - math.sqrt(1 - a) * x0),
])
def test_network_adapters_agree(cls, to_net):
    """An oracle network built from the mixture's own x0/eps gives back the same x0hat, epshat
    through each adapter, and sees the network timestep t - 1."""
    den = GaussianMixtureDenoiser(3 * torch.randn(4, 3, generator=gen(3), dtype=torch.float64), torch.ones(4, dtype=torch.float64), ABAR)
    seen = []

    def net(x, steps):
        t = int(steps[0]) + 1
        seen.append(t)
        x0, eps = den.denoise(x, t)
        return to_net(x0, eps, float(ABAR[t]))

    adapter = cls(net, ABAR)
    x = torch.randn(5, 3, generator=gen(4), dtype=torch.float64)
    x0, eps = adapter.denoise(x, 123)
    ref0, refe = den.denoise(x, 123)
    assert seen == [123] and torch.allclose(x0, ref0, atol=1e-10) and torch.allclose(eps, refe, atol=1e-10)
    with pytest.raises(ValueError, match="model: returned"):
        cls(lambda x, s: x[:, :2], ABAR).denoise(x, 5)


@pytest.mark.parametrize("dx, dy", [(2, 1), (4, 2), (10, 1)])
def test_exact_posterior_against_importance_sampling(dx, dy):
    """Posterior mean, mode weights and evidence against self-normalised importance sampling from
    the prior (4e5 draws: Monte Carlo error ~1e-2 here; tolerance 5 standard errors)."""
    g = gen(10 + dx)
    prior = gmm25_prior(dx, generator=g)
    problem = dcps_inverse_problem(prior, dy, 2.0, generator=g)
    post = exact_posterior(problem)
    xs = prior.sample(400_000, gen(20))
    loglik = -0.5 * ((problem.y[None] - xs @ problem.A.T) ** 2).sum(-1) / 4.0 - 0.5 * dy * math.log(2 * math.pi * 4.0)
    w = torch.softmax(loglik, 0)
    ess = 1 / (w * w).sum()
    is_mean = (w[:, None] * xs).sum(0)
    exact_mean = post.weights @ post.means
    sd = torch.sqrt(torch.diagonal(post.cov) + post.weights @ (post.means - exact_mean) ** 2)
    assert bool(((is_mean - exact_mean).abs() <= 5 * sd / ess.sqrt() + 1e-3).all())
    is_evidence = float(torch.logsumexp(loglik, 0) - math.log(len(xs)))
    assert abs(is_evidence - log_evidence(problem)) < 5 / math.sqrt(float(ess))


def test_noiseless_posterior_satisfies_the_observation():
    problem = mcgdiff_inverse_problem(gmm25_prior(6, generator=gen(5)), 2, generator=gen(6))
    problem.sigma_y = 0.0
    problem.y = problem.A @ problem.x_true
    post = exact_posterior(problem)
    s = post.sample(100, gen(7))
    # The singular covariance's square root comes from an eigen-decomposition: its null
    # directions carry eigenvalues ~1e-16, i.e. ~1e-8 of noise (measured 3e-8); 1e-6 is far below
    # any real violation (the observed coordinates have prior spread ~8).
    assert (s @ problem.A.T - problem.y).abs().max() < 1e-6


@pytest.mark.parametrize("shape", [(1, 10), (3, 5), (5, 3), (4, 4)])
def test_check_svd_on_random_operators(shape):
    op = DenseOperator(torch.randn(*shape, generator=gen(8), dtype=torch.float64))
    errors = check_svd(op)
    assert max(errors.values()) < 1e-10
    assert op.rank == min(shape)


def test_check_svd_catches_a_broken_operator():
    op = DenseOperator(torch.randn(3, 5, generator=gen(9), dtype=torch.float64))
    op._V = op._V.clone()
    op._V[:, 0] *= 1.01  # no longer orthogonal
    with pytest.raises(AssertionError, match="check_svd"):
        check_svd(op)


def test_sliced_wasserstein_matches_scipy():
    a = torch.randn(50, 3, generator=gen(11), dtype=torch.float64)
    b = torch.randn(77, 3, generator=gen(12), dtype=torch.float64) + 0.3
    theta = metrics.random_directions(3, 7, gen(13))
    ours = metrics.wasserstein_1d(a @ theta, b @ theta).numpy()
    ref = [wasserstein_distance((a @ theta)[:, k].numpy(), (b @ theta)[:, k].numpy()) for k in range(7)]
    assert np.allclose(ours, ref, atol=1e-12)


def test_network_denoiser_traces_x_only():
    """A network with trainable weights: no graph through them on a plain call (samplers write
    its outputs with out=), a graph in x when x requires grad (DPS, DCPS)."""
    import fkdiff
    from fkdiff.diffusion import EpsilonDenoiser, linear_schedule
    from fkdiff.operators import box_inpainting

    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    den = EpsilonDenoiser(lambda x, t: net(x), linear_schedule(1000))
    x = torch.randn(2, 3, 8, 8)
    x0, eps = den(x, 10)
    assert not x0.requires_grad and not eps.requires_grad
    xr = x.clone().requires_grad_(True)
    x0, _ = den(xr, 10)
    (g,) = torch.autograd.grad(x0.sum(), xr)
    assert g.shape == x.shape and net.weight.grad is None
    op = box_inpainting((3, 8, 8))
    y = op.A(torch.randn(1, 3, 8, 8))[0]
    result = fkdiff.MCGDiff(num_particles=4, num_steps=5)(den, op, y, 0.1, num_samples=2, progress=False,
                                                          generator=torch.Generator().manual_seed(0))
    assert result.samples.shape == (2, 3, 8, 8) and bool(torch.isfinite(result.samples).all())
