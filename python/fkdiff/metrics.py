"""Distances between sample sets and exact posteriors (MATH.md, Gaussian-mixture benchmark).

* :func:`sliced_wasserstein` — the mean over 100 random unit directions of the 1-D W1 distance
  between the projected sample sets (the papers' scripts; not POT's default ``p = 2`` with 50
  projections).
* :func:`mode_weight_error` — ``Δw``: the L1 distance between the component weights fitted to the
  samples by EM (components held at the exact posterior's, weights started uniform, run to
  convergence) and the exact posterior weights.
* :func:`observed_spread` — the variance of the samples along the observed directions (the leading
  right singular vectors of A) over the exact variance, and the fraction of samples more than 5 sd
  off there: sliced Wasserstein averages over directions and hides errors along the few observed
  ones.
* :func:`noise_floor` — the same distances between two exact sample sets of the same sizes (mean
  and sd over repeats): the yardstick of every number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["sliced_wasserstein", "wasserstein_1d", "mode_weight_error", "observed_spread", "noise_floor", "NoiseFloor"]


def wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """W1 between the empirical laws of the columns of ``a (n, P)`` and ``b (m, P)`` -> ``(P,)``.

    Integrates ``|F_a - F_b|`` over the merged support (unequal sizes allowed), as
    ``scipy.stats.wasserstein_distance`` does, for all P projections at once."""
    n, m = a.shape[0], b.shape[0]
    a_sorted = torch.sort(a, dim=0).values
    b_sorted = torch.sort(b, dim=0).values
    allv = torch.sort(torch.cat([a_sorted, b_sorted], dim=0), dim=0).values  # (n + m, P)
    deltas = allv[1:] - allv[:-1]
    left = allv[:-1]
    cdf_a = torch.searchsorted(a_sorted.T.contiguous(), left.T.contiguous(), right=True).T.to(torch.float64) / n
    cdf_b = torch.searchsorted(b_sorted.T.contiguous(), left.T.contiguous(), right=True).T.to(torch.float64) / m
    return ((cdf_a - cdf_b).abs() * deltas).sum(0)


def random_directions(dim: int, n: int = 100, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(dim, n)`` random unit vectors (normalised Gaussians)."""
    theta = torch.randn(dim, n, generator=generator, dtype=torch.float64)
    return theta / theta.norm(dim=0, keepdim=True)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 100, generator=None, directions=None) -> float:
    """Mean over ``n_projections`` random unit directions of W1 between the projections of the
    sample sets ``x (n, D)`` and ``y (m, D)``."""
    x = x.detach().to(torch.float64).cpu()
    y = y.detach().to(torch.float64).cpu()
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x, y: expected (n, D) and (m, D) sample sets, got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return math.inf
    theta = directions if directions is not None else random_directions(x.shape[1], n_projections, generator)
    return float(wasserstein_1d(x @ theta, y @ theta).mean())


def fitted_weights(samples: torch.Tensor, posterior, max_iter: int = 10_000, tol: float = 1e-10) -> torch.Tensor:
    """EM for the weights of ``posterior``'s components (means and covariance held fixed),
    started uniform, run until the weights move less than ``tol`` (L1)."""
    x = samples.detach().to(torch.float64).cpu()
    log_comp = _component_log_prob(posterior, x)  # (n, K)
    K = log_comp.shape[1]
    w = torch.full((K,), 1.0 / K, dtype=torch.float64)
    for _ in range(max_iter):
        resp = torch.softmax(torch.log(w) + log_comp, dim=1)
        new = resp.mean(0)
        if (new - w).abs().sum() < tol:
            w = new
            break
        w = new.clamp(min=1e-300)
    return w


def _component_log_prob(posterior, x: torch.Tensor) -> torch.Tensor:
    """``log N(x; m_c, Sigma)`` on the support of Sigma (the noiseless posterior is degenerate:
    project onto the eigenvectors with positive eigenvalues)."""
    evals, evecs = torch.linalg.eigh(0.5 * (posterior.cov + posterior.cov.T))
    keep = evals > 1e-10 * float(evals.max())
    basis, lam = evecs[:, keep], evals[keep]
    diff = (x[:, None, :] - posterior.means[None]) @ basis  # (n, K, r)
    return -0.5 * (diff * diff / lam).sum(-1) - 0.5 * (torch.log(lam).sum() + lam.numel() * math.log(2 * math.pi))


def mode_weight_error(samples: torch.Tensor, posterior) -> float:
    """Δw = L1 distance between EM-fitted component weights and the exact posterior weights."""
    if not torch.isfinite(samples).all():
        return math.inf
    return float((fitted_weights(samples, posterior) - posterior.weights).abs().sum())


def observed_spread(samples: torch.Tensor, posterior, A: torch.Tensor, n_sd: float = 5.0) -> dict:
    """Spread along the observed directions (leading right singular vectors of ``A``).

    Returns ``{"variance_ratio": mean over directions of var(samples . v) / exact var,
    "outlier_fraction": fraction of samples more than n_sd exact sd off in some observed
    direction}``. The exact law along ``v`` is the posterior mixture's projection: mean
    ``sum_c w_c m_c . v`` and variance ``v^T Sigma v + sum_c w_c (m_c . v - mean)^2``. In the
    noiseless case the exact variance is 0: the ratio is replaced by the RMS distance of the
    samples' observed coordinates to ``ybar`` (``"observed_rms"``)."""
    x = samples.detach().to(torch.float64).cpu()
    _, S, Vh = torch.linalg.svd(A.to(torch.float64), full_matrices=False)
    dirs = Vh[S > 1e-6 * S.max()].T  # (D, r)
    proj = x @ dirs  # (n, r)
    comp_mean = posterior.means @ dirs  # (K, r)
    mean = posterior.weights @ comp_mean
    var = torch.diagonal(dirs.T @ posterior.cov @ dirs) + posterior.weights @ (comp_mean - mean) ** 2
    if float(var.max()) < 1e-12:
        return {"observed_rms": float(((proj - mean) ** 2).mean().sqrt()), "variance_ratio": math.nan, "outlier_fraction": math.nan}
    ratio = proj.var(dim=0) / var
    # "off" means outside every component's n_sd band along that direction
    comp_sd = torch.diagonal(dirs.T @ posterior.cov @ dirs).sqrt()
    near = ((proj[:, None, :] - comp_mean[None]).abs() <= n_sd * comp_sd).any(dim=1)  # (n, r)
    return {"variance_ratio": float(ratio.mean()), "outlier_fraction": float((~near).any(dim=1).double().mean()), "observed_rms": math.nan}


@dataclass
class NoiseFloor:
    """Distances between two independent exact sample sets: mean and sd over repeats."""

    sw_mean: float
    sw_sd: float
    dw_mean: float
    dw_sd: float
    n_samples: int
    repeats: int


def noise_floor(posterior, n_samples: int, n_reference: int | None = None, repeats: int = 10, generator=None) -> NoiseFloor:
    """SW and Δw of exact samples of size ``n_samples`` against exact samples of size
    ``n_reference`` (default the same), over ``repeats`` independent draws."""
    n_reference = n_reference or n_samples
    sws, dws = [], []
    for _ in range(repeats):
        a = posterior.sample(n_samples, generator)
        b = posterior.sample(n_reference, generator)
        sws.append(sliced_wasserstein(a, b, generator=generator))
        dws.append(mode_weight_error(a, posterior))
    sw, dw = torch.tensor(sws), torch.tensor(dws)
    return NoiseFloor(float(sw.mean()), float(sw.std()), float(dw.mean()), float(dw.std()), n_samples, repeats)


# --------------------------------------------------------------------------------------------
# Image metrics: PSNR, SSIM, LPIPS (for fkdiff restore)
# --------------------------------------------------------------------------------------------
#
# Images are (n, C, H, W) or (C, H, W) tensors, by default in [-1, 1] (data_range = 2: the
# network's range). The reference broadcasts: one (C, H, W) image against n candidates.


def _image_pair(x: torch.Tensor, ref: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` and ``ref`` as float64 CPU batches ``(n, C, H, W)`` (``ref`` broadcast to ``x``)."""
    if not isinstance(x, torch.Tensor) or not isinstance(ref, torch.Tensor):
        raise TypeError(f"{name}: expected torch tensors, got {type(x).__name__} and {type(ref).__name__}")
    x = x.detach().to("cpu", torch.float64)
    ref = ref.detach().to("cpu", torch.float64)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if ref.dim() == 3:
        ref = ref.unsqueeze(0)
    if x.dim() != 4 or ref.dim() != 4 or x.shape[1:] != ref.shape[1:] or ref.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"{name}: expected images (n, C, H, W) and a reference (C, H, W) or (n, C, H, W) of the "
                         f"same size, got {tuple(x.shape)} and {tuple(ref.shape)}")
    return x, ref.expand_as(x)


def _check_range(data_range, name: str) -> float:
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"{name}: data_range must be a positive number, got {data_range!r}")
    return float(data_range)


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` per image, in dB.

    Args:
        x: ``(n, C, H, W)`` (or one ``(C, H, W)``) images.
        ref: the reference, ``(C, H, W)`` or ``(n, C, H, W)``.
        data_range: max - min of the pixel range (2 for ``[-1, 1]``, 1 for ``[0, 1]``, 255 for
            bytes). Images are taken as they are: clip them first if they may leave the range.

    Returns:
        ``(n,)`` float64; ``inf`` where an image equals its reference, NaN where it holds NaN.
    """
    data_range = _check_range(data_range, "psnr")
    x, ref = _image_pair(x, ref, "psnr")
    mse = ((x - ref) ** 2).flatten(1).mean(1)
    with torch.no_grad():
        return 10.0 * torch.log10(data_range**2 / mse)  # mse = 0 gives +inf


def ssim_window(height: int, width: int, default: int = 7) -> int:
    """The SSIM window :func:`ssim` uses for an image of this size: ``default`` (7, scikit-image's)
    when it fits, else the largest odd size that does (at least 3)."""
    side = min(height, width)
    if side < 3:
        raise ValueError(f"ssim: images must be at least 3 x 3 pixels, got {height} x {width}")
    win = min(default, side if side % 2 else side - 1)
    return max(win, 3)


def ssim(x: torch.Tensor, ref: torch.Tensor, data_range: float = 2.0, win_size: int | None = None, *,
         low: float = -1.0) -> torch.Tensor:
    """Structural similarity per image (:func:`skimage.metrics.structural_similarity`, the
    channels averaged with ``channel_axis``).

    SSIM is not shift-invariant (its luminance term compares the local means to 0), so the
    images are first mapped from their range ``[low, low + data_range]`` (default ``[-1, 1]``) to
    ``[0, 1]``: the numbers are those of the usual ``[0, 1]`` / ``[0, 255]`` convention, whatever
    range the images come in. Pass ``low=0`` for images in ``[0, 1]`` or ``[0, 255]``.

    The window is scikit-image's default: uniform ``7 x 7``, constants ``K1 = 0.01``, ``K2 =
    0.03``, sample covariances, mean SSIM over the window positions that fit inside the image
    (26 x 26 of them on 32 x 32 images). The Gaussian 11 x 11 window of Wang et al. would leave
    only 22 x 22 positions on a 32 x 32 image, a quarter of it lost at the borders, where
    inpainting and deblurring errors sit; 7 x 7 keeps two thirds. Images smaller than 7 pixels a
    side get the largest odd window that fits (:func:`ssim_window`).

    Args:
        x: ``(n, C, H, W)`` (or ``(C, H, W)``) images; ``ref`` the reference, ``(C, H, W)`` or
            ``(n, C, H, W)``.
        data_range: max - min of the pixel range (2 for ``[-1, 1]``).
        win_size: an odd window side to use instead (at most ``min(H, W)``).
        low: the lower end of the pixel range (-1 for ``[-1, 1]``).

    Returns:
        ``(n,)`` float64 in ``[-1, 1]``; 1 where an image equals its reference.
    """
    import numpy as np
    from skimage.metrics import structural_similarity

    data_range = _check_range(data_range, "ssim")
    if isinstance(low, bool) or not isinstance(low, (int, float)) or not math.isfinite(low):
        raise ValueError(f"ssim: low must be a finite number, got {low!r}")
    x, ref = _image_pair(x, ref, "ssim")
    x, ref = (x - low) / data_range, (ref - low) / data_range  # to [0, 1]
    _, C, H, W = x.shape
    if win_size is None:
        win_size = ssim_window(H, W)
    elif isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 3 or win_size % 2 == 0 or win_size > min(H, W):
        raise ValueError(f"ssim: win_size must be an odd int in [3, {min(H, W)}], got {win_size!r}")
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        a, b = x[i].numpy(), ref[i].numpy()
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            out[i] = math.nan
            continue
        if C == 1:
            out[i] = float(structural_similarity(a[0], b[0], data_range=1.0, win_size=win_size))
        else:
            out[i] = float(structural_similarity(a, b, data_range=1.0, win_size=win_size, channel_axis=0))
    return out


_LPIPS_CACHE: dict = {}

_LPIPS_HELP = (
    "LPIPS needs its network's weights on disk (fkdiff never downloads them). Either a TorchScript module "
    "taking two (n, 3, H, W) batches in [-1, 1] and returning one distance per image (torch.jit.save), or a "
    "full state_dict of lpips.LPIPS, backbone included, saved once where the network is reachable: "
    "torch.save(lpips.LPIPS(net='alex').state_dict(), 'lpips_alex.pt') (needs pip install lpips torchvision "
    "to load it back)"
)


def _lpips_net_of(state: dict) -> str:
    """The backbone of an ``lpips.LPIPS`` state dict: ``"squeeze"`` (7 linear heads), ``"alex"``
    (11 x 11 first convolution) or ``"vgg"``."""
    if "lin6.model.1.weight" in state:
        return "squeeze"
    first = state.get("net.slice1.0.weight")
    if first is None:
        raise ValueError(
            "lpips: the state dict holds no backbone weights (net.slice1.0.weight missing): the small files shipped "
            "in the lpips package are only the linear heads. " + _LPIPS_HELP
        )
    return "alex" if tuple(first.shape[-2:]) == (11, 11) else "vgg"


def load_lpips(weights, device=None):
    """The LPIPS network in ``weights`` as a callable ``f(x, ref) -> (n,)`` distances on
    ``(n, 3, H, W)`` batches in ``[-1, 1]``; loaded once per (path, device).

    ``weights`` is either a TorchScript file (``torch.jit.load``; its ``forward(x, ref)`` takes
    images in ``[-1, 1]`` and returns one distance per image, any shape that flattens to ``(n,)``)
    or a ``torch.save``'d ``state_dict`` of ``lpips.LPIPS`` including the backbone (built with
    ``lpips.LPIPS(pretrained=False, pnet_rand=True)``, which downloads nothing, then loaded
    strictly). The ``lpips`` package (and torchvision) is needed only for the second form.

    Raises:
        FileNotFoundError: no file at ``weights``.
        ImportError: a state dict, but ``lpips`` is not installed.
        ValueError: a file that is neither, or a state dict without the backbone.
    """
    import os

    path = os.fspath(weights)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    key = (os.path.abspath(path), str(dev))
    if key in _LPIPS_CACHE:
        return _LPIPS_CACHE[key]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"lpips: no weights file at {path!r}. " + _LPIPS_HELP)
    try:
        module = torch.jit.load(path, map_location=dev)
    except (RuntimeError, ValueError):
        module = None
    if module is not None:
        module.eval()

        def fn(x, ref):
            with torch.no_grad():
                return module(x, ref).reshape(x.shape[0], -1).mean(1)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"lpips: {path!r} is neither a TorchScript module nor a torch state dict ({err}). " + _LPIPS_HELP) from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"lpips: {path!r} holds no state dict of tensors. " + _LPIPS_HELP)
        net = _lpips_net_of(state)
        try:
            import lpips as lpips_package
        except ImportError as err:
            raise ImportError(f"lpips: {path!r} is an LPIPS state dict, which needs the lpips package "
                              f"(pip install lpips torchvision); or export the network as TorchScript. " + _LPIPS_HELP) from err
        model = lpips_package.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
        model.load_state_dict(state, strict=True)
        model.eval().to(dev)

        def fn(x, ref):
            with torch.no_grad():
                return model(x, ref).reshape(x.shape[0], -1).mean(1)

    _LPIPS_CACHE[key] = fn
    return fn


def lpips_distance(x: torch.Tensor, ref: torch.Tensor, weights, device=None, batch_size: int = 64) -> torch.Tensor:
    """Learned perceptual distance (LPIPS, Zhang et al. 2018) per image, from local weights.

    Args:
        x: ``(n, 3, H, W)`` (or ``(3, H, W)``) images in ``[-1, 1]``; ``ref`` the reference,
            ``(3, H, W)`` or ``(n, 3, H, W)``. Small images are fine for the network (AlexNet
            needs about 32 px a side at least); compare numbers only at one image size.
        weights: path of the network (see :func:`load_lpips`).
        device: where the network runs (default CPU).

    Returns:
        ``(n,)`` float64, lower is closer (0 for identical images).
    """
    fn = load_lpips(weights, device)
    x, ref = _image_pair(x, ref, "lpips")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    out = []
    for start in range(0, x.shape[0], batch_size):
        a = x[start:start + batch_size].to(dev, torch.float32)
        b = ref[start:start + batch_size].to(dev, torch.float32)
        out.append(fn(a, b).detach().to("cpu", torch.float64))
    return torch.cat(out)


__all__ += ["psnr", "ssim", "ssim_window", "lpips_distance", "load_lpips"]
