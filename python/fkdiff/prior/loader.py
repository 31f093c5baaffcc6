"""Saving and loading the bundled prior, and drawing unconditional samples from it.

A prior file is one ``torch.save`` dict (readable with ``weights_only=True``)::

    {"format": "fkdiff.prior", "version": 1,
     "config": {"model": UNet config, "schedule": {"name": "linear", "T": 1000, ...},
                "data": {...}, "training": {...}},
     "state_dict": the network's weights in float16}

Weights are stored in half precision (half the size) and loaded back as float32.
"""

from __future__ import annotations

import os

import torch

from ..diffusion import EpsilonDenoiser, ddim_step, linear_schedule, time_grid
from .unet import UNet

__all__ = [
    "DEFAULT_WEIGHTS",
    "FORMAT",
    "save_prior",
    "load_prior",
    "load_network",
    "schedule_from_config",
    "sample_prior",
    "image_grid",
    "save_image_grid",
]

#: where ``fkdiff train-prior`` writes by default and :func:`load_prior` looks by default
DEFAULT_WEIGHTS = os.path.join(os.path.dirname(__file__), "weights.pt")
FORMAT = "fkdiff.prior"
_VERSION = 1


def save_prior(model: UNet, config: dict, path: str | os.PathLike = DEFAULT_WEIGHTS) -> str:
    """Write ``model``'s weights (as float16) and ``config`` (plain Python values; ``model``'s
    own config is stored under ``"model"``) to ``path``, atomically (temporary file + rename)."""
    state = {k: v.detach().to("cpu", torch.float16).clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": _VERSION, "config": dict(config, model=dict(model.config)), "state_dict": state}
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + ".tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def _read(path) -> dict:
    if path is None:
        path = DEFAULT_WEIGHTS
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"no trained prior at {path}: train it with `fkdiff train-prior` (about 30 minutes on 2 CPU "
                "cores; needs the `train` extra, pip install 'fkdiff[train]'), or pass the path of a prior file"
            )
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no prior file at {path} (write one with `fkdiff train-prior --out {path}`)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not an fkdiff prior file (expected format {FORMAT!r})")
    if payload.get("version") != _VERSION:
        raise ValueError(f"{path}: prior file version {payload.get('version')} is not supported (expected {_VERSION})")
    return payload


def schedule_from_config(config: dict) -> torch.Tensor:
    """The ``alphas_cumprod`` table (leading 1) that a prior was trained with."""
    sched = config["schedule"]
    if sched["name"] != "linear":
        raise ValueError(f"schedule {sched['name']!r} is not supported (expected 'linear')")
    return linear_schedule(int(sched["T"]), float(sched["beta_start"]), float(sched["beta_end"]))


def load_network(path=None, device=None) -> tuple[UNet, dict]:
    """``(network in eval mode, float32, no parameter gradients; config)`` from a prior file."""
    payload = _read(path)
    config = payload["config"]
    model = UNet(**config["model"])
    model.load_state_dict({k: v.to(torch.float32) for k, v in payload["state_dict"].items()})
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return model, config


def load_prior(path=None, device=None) -> EpsilonDenoiser:
    """The image prior as an :class:`~fkdiff.diffusion.EpsilonDenoiser` on 3 x 32 x 32 images in
    ``[-1, 1]``: the network (eval mode, float32, on ``device``) and the schedule it was trained
    with. ``path=None``: the weights shipped with the package (:data:`DEFAULT_WEIGHTS`).

    The denoiser carries the file's config as ``denoiser.config``."""
    model, config = load_network(path, device)
    denoiser = EpsilonDenoiser(model, schedule_from_config(config))
    denoiser.config = config
    return denoiser


@torch.no_grad()
def sample_prior(denoiser, n: int, steps: int = 100, generator: torch.Generator | None = None, eta: float = 1.0,
                 batch_size: int = 64, clip: bool = True, shape=(3, 32, 32), device=None, progress: bool = False) -> torch.Tensor:
    """Unconditional samples ``(n, *shape)`` by DDIM(eta) on a uniform grid of ``steps`` jumps
    (eta = 1, the default: DDPM ancestral sampling, which forgives a small network's errors
    better; eta = 0: deterministic DDIM).

    ``clip``: clip x0hat to ``[-1, 1]`` at every step (with epshat made consistent), as usual for
    image models. Noise comes from ``generator`` (a CPU generator; draws are moved to ``device``),
    one batch of ``batch_size`` samples after the other: with eta = 0 (only the starting noise is
    drawn) the samples do not depend on ``batch_size``."""
    if n < 1:
        raise ValueError(f"n: expected at least 1 sample, got {n}")
    if device is None:
        model = getattr(denoiser, "model", None)
        params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    abar = denoiser.alphas_cumprod
    grid = time_grid(abar, steps).tolist()
    outs = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=((n + batch_size - 1) // batch_size) * (len(grid) - 1), desc="sampling", leave=False)
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = torch.randn((b, *shape), generator=generator).to(device)
        for t, t_prev in zip(reversed(grid[1:]), reversed(grid[:-1])):
            step = ddim_step(float(abar[t]), float(abar[t_prev]), eta)
            x0, eps = denoiser.denoise(x, t)
            if clip:
                a, s = step.abar_t ** 0.5, (1.0 - step.abar_t) ** 0.5
                x0 = x0.clamp(-1.0, 1.0)
                eps = (x - a * x0) / s
            x = step.mean(x0, eps)
            if step.sigma > 0:
                x = x + step.sigma * torch.randn(x.shape, generator=generator).to(device)
            if bar is not None:
                bar.update(1)
        outs.append(x.clamp(-1.0, 1.0).cpu())
    if bar is not None:
        bar.close()
    return torch.cat(outs)


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1):
    """``(n, 3, H, W)`` images in ``[-1, 1]`` to one ``(rows (H + pad), nrow (W + pad), 3)`` uint8
    numpy array (white padding), for a figure."""
    import numpy as np

    from .data import to_uint8

    arr = to_uint8(images)
    n, c, h, w = arr.shape
    rows = (n + nrow - 1) // nrow
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = arr[i].transpose(1, 2, 0)
    return grid


def save_image_grid(images: torch.Tensor, path, nrow: int = 8, scale: int = 3) -> str:
    """Write :func:`image_grid` as a PNG, each pixel ``scale`` x ``scale`` (matplotlib)."""
    import numpy as np
    from matplotlib import image as mpimg

    grid = image_grid(images, nrow)
    if scale > 1:
        grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    path = os.fspath(path)
    mpimg.imsave(path, grid)
    return path
