"""What every sampler shares: the result object, argument checks, batched denoiser calls, the
rotated (SVD-basis) denoiser, seeds, and the progress bar.

A sampler is an object built with its hyper-parameters and called as
``sampler(denoiser, operator, y, sigma_y, num_samples=..., generator=...)``; it returns a
:class:`SamplingResult`. Internally it works on ``(B, N, D)`` arrays: ``B = num_samples``
independent runs, ``N`` particles per run (1 for the single-trajectory samplers), ``D`` the
flattened dimension of x.

Randomness: one 64-bit key per call is drawn from the user's ``generator`` (the default CPU
generator when None); every normal draw is Philox at the counter ``((step * B + b) * N + n) * D + d``
(MATH.md, Notation), so results do not depend on ``max_batch`` or on the device. Draws made with
torch (resampling uniforms) use a ``torch.Generator`` seeded from the same key.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import ops
from ..diffusion import Denoiser, GaussianMixtureDenoiser
from ..operators import DenseOperator, LinearOperator

__all__ = ["SamplingResult", "Problem", "DenoiserCalls", "RotatedDenoiser", "Sampler", "progress_bar"]


@dataclass
class SamplingResult:
    """What a sampler returns.

    Attributes:
        samples: ``(num_samples, *x_shape)`` independent posterior samples.
        particles: ``(num_samples, N, *x_shape)`` final particles of each run (particle samplers
            with ``return_particles=True``), else None.
        log_weights: ``(num_samples, N)`` their normalised log-weights, else None.
        ess: ``(num_steps, num_samples)`` effective sample size after each weighting, else None.
        log_evidence: ``(num_samples,)`` estimate of ``log p(y)`` per run, else None.
        nfe: denoiser evaluations per sample (rows through the network / num_samples).
        vjp: vector–Jacobian products through the denoiser per sample.
        seconds: wall time of the call.
        info: sampler-specific extras (settings actually used, ancestry, traces).
    """

    samples: torch.Tensor
    particles: torch.Tensor | None = None
    log_weights: torch.Tensor | None = None
    ess: torch.Tensor | None = None
    log_evidence: torch.Tensor | None = None
    nfe: float = 0.0
    vjp: float = 0.0
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Problem:
    """A validated call: the operator, the observation in the working dtype, its SVD view."""

    denoiser: Denoiser
    operator: LinearOperator
    y: torch.Tensor  # (1, *y_shape)
    sigma_y: float
    num_samples: int
    dtype: torch.dtype
    device: torch.device
    singular_values: torch.Tensor  # (r,) working dtype
    ybar: torch.Tensor  # (r,) rotated observation U^T y / s

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.operator.x_shape)

    @property
    def dim(self) -> int:
        return self.operator.dim_x

    @property
    def rank(self) -> int:
        return self.singular_values.numel()

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self.denoiser.alphas_cumprod


class DenoiserCalls:
    """Batched, counted, checked calls of a denoiser.

    ``denoise(x (M, *shape), t, out=None)`` runs the network over ``x`` in chunks of at most
    ``max_batch`` rows, counts the rows, and records on the device whether any output was
    non-finite; :meth:`check` reads that record once (one synchronisation per sampler step) and
    raises a ``ValueError`` naming the step.

    ``ddim_mean(x, t, step, out)`` gives the DDIM mean ``c_x0 x0hat + c_eps epshat`` straight
    into the sampler's reusable buffer ``out``, chunk by chunk (no ``torch.cat``); a denoiser that
    writes it in one pass (:attr:`Denoiser.writes_in_place`) makes no other (M, D) array.

    Chunk sizes are rounded down to a multiple of 8 rows (when ``max_batch >= 8``): blocked matrix
    products (BLAS) round a row differently when it falls in a tail block, so with chunk
    boundaries on multiples of 8 every row sits in the same place of its tile whatever
    ``max_batch`` is, and a row-wise deterministic denoiser gives bit-identical results.
    """

    def __init__(self, denoiser: Denoiser, max_batch: int | None, shape: tuple[int, ...]):
        self.denoiser = denoiser
        self.max_batch = max_batch
        self.shape = tuple(shape)
        self.rows = 0
        self.vjp_rows = 0
        self._bad: torch.Tensor | None = None

    def _record(self, *outputs: torch.Tensor) -> None:
        # One read pass per output and no temporary: min and max are finite exactly when every
        # entry is (NaN propagates through both). 30x cheaper on a CPU than a float64 sum, which
        # converts the whole array first, and 35x cheaper than isfinite().all().
        for out in outputs:
            if out.numel() == 0:
                continue
            lo, hi = torch.aminmax(out)
            bad = ~(torch.isfinite(lo) & torch.isfinite(hi))
            self._bad = bad if self._bad is None else (self._bad | bad)

    def _check_outputs(self, shape: tuple[int, ...], out) -> tuple[torch.Tensor, torch.Tensor]:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError("denoiser: denoise(x, t) must return (x0hat, epshat)")
        for name, value in zip(("x0hat", "epshat"), out):
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(shape):
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"denoiser: {name} has shape {got}, expected {tuple(shape)}")
        return out

    def _call(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._check_outputs(x.shape, self.denoiser.denoise(x, t))

    def _mean_into(self, x: torch.Tensor, t: int, step, out: torch.Tensor) -> None:
        if self.denoiser.writes_in_place:
            self.denoiser.ddim_mean_into(x, self.denoiser._check_time(t), step, out)
        else:
            x0, eps = self._call(x, t)
            torch.mul(x0, step.c_x0, out=out).add_(eps, alpha=step.c_eps)

    def chunk_rows(self, M: int) -> int:
        """Rows per network call for a batch of ``M`` rows (see the class doc)."""
        chunk = self.max_batch
        if chunk is None or M <= chunk:
            return max(M, 1)
        return chunk - chunk % 8 if chunk >= 8 else chunk

    def ddim_mean(self, x: torch.Tensor, t: int, step, out: torch.Tensor) -> torch.Tensor:
        """``out = step.c_x0 x0hat(x) + step.c_eps epshat(x)`` (``out`` shaped like ``x``)."""
        M = x.shape[0]
        self.rows += M
        chunk = self.chunk_rows(M)
        for start in range(0, M, chunk):
            rows = slice(start, min(start + chunk, M))
            self._mean_into(x[rows], t, step, out[rows])
        self._record(out)
        return out

    def denoise_with_vjp(self, x: torch.Tensor, t: int, cols: int | None = None):
        """One chunk through :meth:`Denoiser.predict_with_vjp` (``has_vjp`` denoisers): counted
        like :meth:`denoise`; the caller counts the VJP and records its result (which sees every
        coordinate, when the outputs are only the first ``cols``)."""
        self.rows += x.shape[0]
        x0, eps, vjp = self.denoiser.predict_with_vjp(x, self.denoiser._check_time(t), cols)
        self._check_outputs(x.shape if cols is None else (x.shape[0], cols), (x0, eps))
        self._record(x0, eps)
        return x0, eps, vjp

    def denoise(self, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        M = x.shape[0]
        self.rows += M
        chunk = self.chunk_rows(M)
        if M <= chunk:
            x0, eps = self._call(x, t)
        else:
            parts = [self._call(part, t) for part in torch.split(x, chunk)]
            x0 = torch.cat([p[0] for p in parts])
            eps = torch.cat([p[1] for p in parts])
        self._record(x0, eps)
        return x0, eps

    def check(self, where: str) -> None:
        if self._bad is not None and bool(self._bad):
            self._bad = None
            raise ValueError(f"denoiser: returned NaN or inf at {where}")
        self._bad = None


class RotatedDenoiser(Denoiser):
    """The denoiser seen in the SVD basis of an operator: ``xbar -> V^T x0hat(V xbar)``.

    Works on flat ``(batch, D)`` spectral coordinates; the network sees ``(batch, *x_shape)``.
    A :class:`GaussianMixtureDenoiser` with a :class:`DenseOperator` is rotated once (means
    ``V^T mu``) instead of on every call."""

    def __init__(self, denoiser: Denoiser, operator: LinearOperator):
        self.alphas_cumprod = denoiser.alphas_cumprod
        self.operator = operator
        self.inner = denoiser
        self._direct = None
        if isinstance(denoiser, GaussianMixtureDenoiser) and isinstance(operator, DenseOperator):
            V = operator.right_singular_vectors.to(denoiser.means.device, denoiser.means.dtype)
            self._direct = GaussianMixtureDenoiser(denoiser.means @ V, denoiser.log_weights.exp(), denoiser.alphas_cumprod)

    @property
    def writes_in_place(self) -> bool:
        return self._direct is not None

    @property
    def has_vjp(self) -> bool:
        return self._direct is not None

    def predict_with_vjp(self, xbar, t, cols=None):
        if self._direct is None:
            return super().predict_with_vjp(xbar, t, cols)
        return self._direct.predict_with_vjp(xbar, t, cols)

    def ddim_mean_into(self, xbar, t, step, out):
        if self._direct is None:
            return super().ddim_mean_into(xbar, t, step, out)
        self._direct.ddim_mean_into(xbar, t, step, out)

    def predict(self, xbar, t):
        if self._direct is not None:
            return self._direct.predict(xbar, t)
        op = self.operator
        x = op.V(xbar).reshape(xbar.shape[0], *op.x_shape)
        x0, eps = self.inner.denoise(x, t)
        return op.Vt(x0), op.Vt(eps)


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar over the sampler's steps (a no-op object when disabled)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, leave=False, dynamic_ncols=True)


class Sampler:
    """Base class: validates the call, times it, fills ``seconds``, ``nfe`` and ``vjp``.

    Subclasses set ``name`` and implement :meth:`run(problem, calls, key, progress)`` returning a
    :class:`SamplingResult` (``samples`` shaped ``(num_samples, *x_shape)``)."""

    name = "sampler"
    max_batch: int | None = None
    #: whether :meth:`run` works in the operator's SVD basis (flat spectral coordinates)
    rotated = True

    def run(self, problem: Problem, calls: DenoiserCalls, key: int, progress: bool) -> SamplingResult:
        raise NotImplementedError

    def __call__(
        self,
        denoiser: Denoiser,
        operator: LinearOperator,
        y: torch.Tensor,
        sigma_y: float,
        *,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        progress: bool = True,
        max_batch: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> SamplingResult:
        """Draw ``num_samples`` independent samples of x given ``y = A x + sigma_y z``.

        Args:
            denoiser: a :class:`fkdiff.diffusion.Denoiser` (network adapter or closed form).
            operator: a :class:`fkdiff.operators.LinearOperator` (SVD protocol).
            y: the observation, shape ``operator.y_shape`` (or ``(1, *y_shape)``).
            sigma_y: observation noise standard deviation, >= 0.
            num_samples: independent samples (runs).
            generator: source of the call's 64-bit key (default: torch's default generator).
            progress: show a tqdm bar over the steps.
            max_batch: at most this many rows per denoiser call (memory bound); results do not
                depend on it. Defaults to the sampler's own ``max_batch`` (None: unbounded, every
                run x particle row in one call). Set it for large image networks: the DDPM
                256 x 256 UNet's forward pass peaks at 6.7 GB of CPU memory for 16 rows (the
                chunk :func:`fkdiff.restore.default_max_batch` picks at that size), so roughly
                four times that (not measured) for MCGdiff's 64 particles in one call.
            dtype: working precision; default float32 (float64 inputs keep float64 when asked).
        """
        problem = self.make_problem(denoiser, operator, y, sigma_y, num_samples, dtype)
        calls = DenoiserCalls(
            RotatedDenoiser(denoiser, operator) if self.rotated else denoiser,
            max_batch if max_batch is not None else self.max_batch,
            (problem.dim,) if self.rotated else problem.x_shape,
        )
        if calls.max_batch is not None and (isinstance(calls.max_batch, bool) or int(calls.max_batch) < 1):
            raise ValueError(f"max_batch: expected a positive int or None, got {calls.max_batch!r}")
        key = ops.noise.resolve_seed(None, generator)
        start = time.perf_counter()
        result = self.run(problem, calls, key, progress)
        if problem.device.type == "cuda":
            torch.cuda.synchronize(problem.device)
        result.seconds = time.perf_counter() - start
        result.nfe = calls.rows / num_samples
        result.vjp = calls.vjp_rows / num_samples
        return result

    @staticmethod
    def make_problem(denoiser, operator, y, sigma_y, num_samples, dtype) -> Problem:
        if not isinstance(denoiser, Denoiser):
            raise TypeError(f"denoiser: expected a fkdiff.diffusion.Denoiser, got {type(denoiser).__name__}")
        if not isinstance(operator, LinearOperator):
            raise TypeError(f"operator: expected a fkdiff.operators.LinearOperator, got {type(operator).__name__}")
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"y: expected a torch.Tensor, got {type(y).__name__}")
        y_shape = tuple(operator.y_shape)
        if tuple(y.shape) == y_shape:
            y = y.unsqueeze(0)
        if tuple(y.shape) != (1, *y_shape):
            raise ValueError(f"y: expected shape {y_shape} for this operator, got {tuple(y.shape)}")
        if isinstance(sigma_y, bool) or not isinstance(sigma_y, (int, float)) or not math.isfinite(sigma_y) or sigma_y < 0:
            raise ValueError(f"sigma_y: expected a finite number >= 0, got {sigma_y!r}")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples: expected a positive int, got {num_samples!r}")
        if dtype is None:
            dtype = torch.float32  # the default working precision, whatever y's dtype
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        if not torch.isfinite(y).all():
            raise ValueError("y: contains NaN or inf")
        means = getattr(denoiser, "means", None)
        if isinstance(means, torch.Tensor) and means.dim() == 2 and means.shape[1] != operator.dim_x:
            raise ValueError(
                f"denoiser: works in dimension {means.shape[1]}, but the operator acts on x of dimension {operator.dim_x}"
            )
        y = y.to(dtype)
        s = operator.singular_values.to(y.device, dtype)
        ybar = operator.rotated_observation(y.to(torch.float64)).to(dtype)[0] if s.numel() else y.new_zeros(0)
        return Problem(denoiser, operator, y, float(sigma_y), num_samples, dtype, y.device, s, ybar)
