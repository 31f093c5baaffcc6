"""The samplers on a CUDA device (skipped without one; `bench/gpu_check.sh` runs them on the lent
GPU): every sampler runs end to end on CUDA tensors with the compiled kernels, gives finite
samples of the right shape, the same samples for the same seed, and, for MCGdiff and DCPS on the
d_x = 4 mixture, distances to the exact posterior within the bounds the CPU tests use."""

from __future__ import annotations

import pytest
import torch

from fkdiff import DCPS, DDRM, DPS, MCGDiff, PiGDM, metrics
from fkdiff.diffusion import GaussianMixtureDenoiser, linear_schedule
from fkdiff.operators import DenseOperator
from fkdiff.problems import gmm

from conftest import gen

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_problem():
    """The d_x = 4, d_y = 2 mixture of the CPU exactness test, moved to the GPU."""
    g = gen(7)
    problem = gmm.mcgdiff_inverse_problem(gmm.gmm25_prior(4, generator=g), 2, generator=g)
    dev = torch.device("cuda")
    den = GaussianMixtureDenoiser(problem.prior.means.to(dev), problem.prior.weights.to(dev), linear_schedule(1000))
    op = DenseOperator(problem.A.to(dev))
    return problem, den, op, problem.y.to(dev)


@pytest.mark.parametrize("sampler", [
    MCGDiff(num_particles=256, num_steps=50),
    DCPS(num_steps=30, langevin_steps=3),
    DPS(num_steps=30),
    PiGDM(num_steps=30),
    DDRM(num_steps=30),
], ids=lambda s: s.name)
def test_runs_on_cuda_deterministically(sampler):
    problem, den, op, y = cuda_problem()
    first = sampler(den, op, y, problem.sigma_y, num_samples=16, generator=gen(3), progress=False)
    again = sampler(den, op, y, problem.sigma_y, num_samples=16, generator=gen(3), progress=False)
    assert first.samples.shape == (16, 4) and first.samples.device.type == "cuda"
    assert torch.isfinite(first.samples).all()
    assert torch.equal(first.samples, again.samples)


@pytest.mark.parametrize("name", ["mcgdiff", "dcps"])
def test_close_to_the_exact_posterior_on_cuda(name):
    """MCGdiff (1000 steps, N = 1024, 64 runs) within the CPU test's bounds (floor mean + 4.7 sd
    for 64 one-draw samples); DCPS (defaults) within the bound its CPU test measured for it on
    the mixtures: better than the prior's own samples."""
    problem, den, op, y = cuda_problem()
    posterior = gmm.exact_posterior(problem)
    g = gen(11)
    reference = posterior.sample(2000, g)
    floor = metrics.noise_floor(posterior, 64, 2000, repeats=20, generator=g)
    if name == "mcgdiff":
        result = MCGDiff(num_particles=1024, num_steps=1000)(den, op, y, problem.sigma_y, num_samples=64, generator=gen(7), progress=False)
        sw = metrics.sliced_wasserstein(result.samples.cpu(), reference, generator=g)
        assert sw <= floor.sw_mean + 4.7 * floor.sw_sd, (sw, floor)
    else:
        result = DCPS()(den, op, y, problem.sigma_y, num_samples=256, generator=gen(7), progress=False)
        sw = metrics.sliced_wasserstein(result.samples.cpu(), reference, generator=g)
        prior_sw = metrics.sliced_wasserstein(problem.prior.sample(256, gen(5)), reference, generator=g)
        assert sw < prior_sw, (sw, prior_sw)
