"""``fkdiff restore``: image restoration with a diffusion prior, end to end.

Takes an image (a PNG/JPEG file, or one of the coloured digits shipped with the prior), degrades
it with a task of :mod:`fkdiff.problems.images` (``y = A x + sigma_y z``), draws posterior
samples with one sampler, and reports PSNR / SSIM (and LPIPS from local weights) of each sample,
of the posterior mean and of the task's classical reconstruction. Writes one PNG (ground truth,
observation, classical reconstruction, samples, posterior mean, per-pixel standard deviation as
a heat map) and a JSON of the numbers beside it::

    fkdiff restore --task inpaint-box                  # DCPS, the default sampler
    fkdiff restore --task sr4 --sampler mcgdiff --image photo.png --model ./ddpm-cifar10
    python -m fkdiff.restore --task colorize --sampler ddrm --index 3 --out figures/

The prior is the one shipped with fkdiff (:func:`fkdiff.prior.load_prior`, 3 x 32 x 32) unless
``--model`` names a diffusers folder (:func:`fkdiff.adapters.from_diffusers`; the image size is
the model's ``sample_size``). Everything runs in the network's ``[-1, 1]``; ``sigma_y`` is in
those units. Samples are clipped to ``[-1, 1]`` for the metrics and the figure.

Sampler defaults for images (``--steps`` replaces the step count of any of them; "rows" are
network evaluations per sample as the samplers count them (``nfe``), "with backward" those that
also backpropagate through the network):

=======  ========================================================  =========================  =========================
sampler  settings                                                  rows per sample            origin
=======  ========================================================  =========================  =========================
mcgdiff  N = ``--particles`` (64) particles, 100 steps, eta 1,     N x 100 = 6400, none with  100 steps: the released
         systematic resampling every step, ``potential="pigdm"``   backward                   step count; see below
         (see below)
dcps     3 blocks, 300 steps, M = 5 Langevin steps (gamma 1e-3),   909, 609 with backward     the DCPS image demo,
         K = 2 gradient steps, lr 1.5 absolute, plug-in potential                             verbatim
dps      1000 steps, zeta 1 (per-sample residual norm), eta 1      1000, all with backward    DPS paper / official code
pigdm    100 steps, eta 1, ``scaling="dcps"`` (see below)          100, all with backward     PiGDM paper
ddrm     20 steps, eta 0.85, eta_b 1                               20                         DDRM paper
=======  ========================================================  =========================  =========================

DCPS's step length: the released ``lr = 1.5`` in absolute units (each normalised gradient step
moves a sample by 1.5 in L2 norm). The library's default, 0.1 in units of the kernel's noise
(tuned on the mixture benchmark), sent 7 of 40 samples to ``|x| ~ 1e5`` on a 32 x 32 digit prior
at 30 steps (sr4 and inpaint-box, 5 images, 4 samples); 1.5 absolute and 0.05 relative sent
none, and 1.5 absolute gave the best posterior means.

PiGDM's update: the paper's conditional score (``scaling="paper"``) moves x0hat by
``(1 - abar_t) / sqrt(abar_t)`` times the guidance gradient, about 80 at t = 930, and the shipped
prior's output was non-finite by step 930 -> 920 on every task tried (sr4, inpaint-box); the DCPS
repository's update (``scaling="dcps"``: the potential's gradient times ``r_t^2 sqrt(abar_t'
abar_t)`` added to the DDIM step) ran, with posterior means of 24.5 dB (sr4, image 0; bicubic
20.3) and 22.3 dB (inpaint-box; biharmonic 15.4).

MCGdiff's potentials: the denoiser-centred ones (``potential="pigdm"``, :mod:`fkdiff.samplers.mcgdiff`)
rather than the paper's. Same particles, steps and seeds (N = 4, 8 runs, 50 steps, test images
0-4, posterior mean), they gave a higher PSNR on each of the 10 inpainting images (box: 22.3 /
22.7 / 19.2 / 21.1 / 16.8 dB vs 18.2 / 21.2 / 17.3 / 20.2 / 14.9; random pixels: 23.5 / 25.4 /
21.8 / 22.6 / 22.0 vs 18.6 / 22.6 / 18.8 / 18.7 / 18.5) and on sr4 at 20 steps 22.8 dB on
average vs 22.1 (bench/RESULTS.md); both are exact in the limit (tested on Gaussian and mixture
priors). ``sampler_options={"potential": "paper"}`` gives the paper's.

MCGdiff's cost is ``particles x num_samples x steps`` rows: 64 x 4 x 100 = 25,600 rows with the
defaults, about 8 minutes on one CPU core for the shipped 1M-parameter UNet (55 rows/s) and
seconds on a GPU. Rows go through the network ``max_batch`` at a time: by default as many as
hold about 4M input values (1360 rows of 3 x 32 x 32, 16 of 3 x 256 x 256), rounded down to a
multiple of 8; ``--max-batch`` bounds it (results do not depend on it).

Where MCGdiff's rows do the most good on images: steps first, then runs (``--num-samples``),
particles last. At 640 rows an image on the shipped prior (inpaint-random, 8 held-out images,
posterior mean vs biharmonic) 8 runs x 4 particles x 20 steps lost by 2.8 dB on average, 2 x 4 x
80 by 0.3, and 8 x 1 x 80 won by 1.1; 8 x 4 x 100 won on 8 of 8 (+1.6 dB). Its weights are too
peaked for tens of particles in thousands of dimensions (an ESS of a few), so a run's particles
collapse to one or two lineages. The quality test's setting, ``--particles 4 --num-samples 16``
at the default 100 steps (6,400 rows), beats the classical reconstruction on at least 4 of 5
test images on inpaint-box, inpaint-random and sr4 (``bench/RESULTS.md``, session 7).

Posterior mean and spread: the average and the per-pixel standard deviation of the samples;
for MCGdiff, of all its final particles with their weights (N per sample, each run's cloud
weighted, the runs averaged), a much less noisy estimate of the same posterior mean than the
``num_samples`` samples (one particle drawn per run).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import metrics
from .problems.images import get_task, observe, task_names

__all__ = ["SAMPLERS", "SAMPLER_DEFAULTS", "make_sampler", "sampler_label", "default_max_batch", "load_image",
           "load_model", "restore", "format_table", "main"]

#: the sampler names ``restore`` knows
SAMPLERS = ("mcgdiff", "dcps", "dps", "pigdm", "ddrm")

#: image defaults per sampler (constructor arguments; the module docstring's table)
SAMPLER_DEFAULTS: dict[str, dict] = {
    "mcgdiff": {"num_steps": 100, "eta": 1.0, "resampling": "systematic", "potential": "pigdm"},
    "dcps": {"num_blocks": 3, "num_steps": 300, "langevin_steps": 5, "gamma": 1e-3, "gradient_steps": 2, "lr": 1.5,
             "lr_mode": "absolute"},
    "dps": {"num_steps": 1000, "zeta": 1.0, "eta": 1.0},
    "pigdm": {"num_steps": 100, "eta": 1.0, "scaling": "dcps"},
    "ddrm": {"num_steps": 20, "eta": 0.85, "eta_b": 1.0},
}

#: input values per network call for the default ``max_batch``
_BATCH_VALUES = 2**22


def _check_sampler(name) -> str:
    if not isinstance(name, str) or name.lower() not in SAMPLERS:
        raise ValueError(f"sampler: unknown sampler {name!r}; expected one of {', '.join(SAMPLERS)}")
    return name.lower()


def _positive(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def default_max_batch(x_shape) -> int:
    """Rows per network call holding about 4M input values, a multiple of 8, at least 8."""
    rows = _BATCH_VALUES // max(math.prod(x_shape), 1)
    return max(8, rows - rows % 8)


def make_sampler(name: str, steps: int | None = None, particles: int = 64, num_timesteps: int | None = None,
                 max_batch: int | None = None, **options):
    """The sampler ``name`` with its image defaults (:data:`SAMPLER_DEFAULTS`), ``steps``
    (when given) as its step count, ``particles`` for MCGdiff, and ``options`` over all of them.
    Step counts are capped at ``num_timesteps`` (the model's T)."""
    from .samplers import DCPS, DDRM, DPS, MCGDiff, PiGDM

    name = _check_sampler(name)
    kwargs = dict(SAMPLER_DEFAULTS[name])
    if steps is not None:
        kwargs["num_steps"] = _positive("steps", steps)
    kwargs.update(options)
    if num_timesteps is not None:
        kwargs["num_steps"] = min(int(kwargs["num_steps"]), int(num_timesteps))
    kwargs["max_batch"] = max_batch
    if name == "mcgdiff":
        kwargs.setdefault("num_particles", _positive("particles", particles))
        kwargs.setdefault("return_particles", True)
        return MCGDiff(**kwargs)
    if name == "dcps":
        kwargs["num_blocks"] = min(int(kwargs["num_blocks"]), int(kwargs["num_steps"]))
        return DCPS(**kwargs)
    if name == "dps":
        return DPS(**kwargs)
    if name == "pigdm":
        return PiGDM(**kwargs)
    return DDRM(**kwargs)


def sampler_label(sampler) -> str:
    """A short description of a sampler's settings, for tables and figures."""
    name = getattr(sampler, "name", type(sampler).__name__)
    if name == "mcgdiff":
        extra = ", PiGDM potentials" if getattr(sampler, "potential", "paper") == "pigdm" else ""
        return f"MCGdiff (N={sampler.num_particles}, {sampler.num_steps} steps{extra})"
    if name == "dcps":
        return (f"DCPS ({sampler.num_blocks} blocks, {sampler.num_steps} steps, M={sampler.langevin_steps}, "
                f"K={sampler.gradient_steps}, lr={sampler.lr:g} {sampler.lr_mode})")
    if name == "dps":
        return f"DPS ({sampler.num_steps} steps, zeta={sampler.zeta:g})"
    if name == "pigdm":
        return f"PiGDM ({sampler.num_steps} steps)"
    if name == "ddrm":
        return f"DDRM ({sampler.num_steps} steps, eta={sampler.eta:g})"
    return repr(sampler)


# ------------------------------------------------------------------------------ inputs


_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;L"}


def load_image(path, x_shape, *, need_colour: bool = False) -> torch.Tensor:
    """A PNG/JPEG (anything PIL reads) as a ``x_shape = (C, H, W)`` float32 tensor in
    ``[-1, 1]``: converted to RGB (C = 3) or grey (C = 1), centre-cropped to the aspect ratio of
    ``(H, W)``, resized with PIL's (antialiased) bicubic filter.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not an image; a greyscale file when ``need_colour`` (colorization needs a
            colour ground truth); a model with other than 1 or 3 channels.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"image: no such file: {str(path)!r}")
    try:
        img = Image.open(p)
        img.load()
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"image: cannot read {str(path)!r} as an image ({err})") from None
    C, H, W = x_shape
    if need_colour and (img.mode in _GREY_MODES or C != 3):
        raise ValueError(f"image: {str(path)!r} is a greyscale image (mode {img.mode}); colorize needs a colour (RGB) "
                         f"image as its ground truth")
    if C == 3:
        img = img.convert("RGB")
    elif C == 1:
        img = img.convert("L")
    else:
        raise ValueError(f"image: the model takes {C} channels; only grey (1) and RGB (3) images can be loaded from files")
    w, h = img.size
    if w * H > h * W:  # too wide: crop the width
        new_w = max(1, round(h * W / H))
        left = (w - new_w) // 2
        img = img.crop((left, 0, left + new_w, h))
    elif w * H < h * W:  # too tall: crop the height
        new_h = max(1, round(w * H / W))
        top = (h - new_h) // 2
        img = img.crop((0, top, w, top + new_h))
    if img.size != (W, H):
        img = img.resize((W, H), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))) / 127.5 - 1.0
    return x.clamp_(-1.0, 1.0)


def load_model(path, device=None):
    """A diffusers ``UNet2DModel`` folder as a denoiser (:func:`fkdiff.adapters.from_diffusers`),
    with clear errors for what is not one."""
    from .adapters import from_diffusers

    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"model: no such folder: {str(path)!r}")
    if not p.is_dir():
        raise ValueError(f"model: {str(path)!r} is a file; expected a diffusers model folder (config.json, weights and "
                         f"scheduler_config.json) or a pipeline folder (unet/ and scheduler/)")
    # the cheap checks first: importing diffusers takes seconds
    configs = [c for c in (p / "unet" / "config.json", p / "config.json") if c.is_file()]
    if not configs:
        raise ValueError(f"model: {str(path)!r} is not a diffusers model folder: no config.json (nor unet/config.json); "
                         f"expected a UNet2DModel saved with save_pretrained, or a pipeline folder (unet/ and scheduler/)")
    try:
        kind = json.loads(configs[0].read_text()).get("_class_name", "UNet2DModel")
    except (ValueError, OSError, AttributeError) as err:
        raise ValueError(f"model: {str(configs[0])!r} is not a readable diffusers config ({err})") from None
    if kind != "UNet2DModel":
        raise ValueError(f"model: {str(configs[0])!r} describes a {kind}; restore takes diffusers UNet2DModel networks")
    try:
        return from_diffusers(p, device=device)
    except ImportError:
        raise
    except (FileNotFoundError, OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"model: {str(path)!r} is not a usable diffusers model folder: {err}") from None


def _model_shape(denoiser, image) -> tuple[int, int, int]:
    """The ``(C, H, W)`` the denoiser works on: its ``x_shape``, the adapter's ``input_shape``
    (diffusers ``sample_size``), the shipped prior's config, else the image's (a tensor) or the
    shipped prior's 3 x 32 x 32."""
    shape = getattr(denoiser, "x_shape", None)
    if shape is None:
        shape = getattr(getattr(denoiser, "model", None), "input_shape", None)
    if shape is None:
        cfg = getattr(denoiser, "config", None)
        if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
            m = cfg["model"]
            shape = (int(m.get("channels", 3)), int(m.get("image_size", 32)), int(m.get("image_size", 32)))
    if shape is None and isinstance(image, torch.Tensor) and image.dim() == 3:
        shape = tuple(image.shape)
    if shape is None:
        shape = (3, 32, 32)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3:
        raise ValueError(f"model: works on shape {shape}; restore needs images (C, H, W)")
    return shape


def _test_image(index: int, x_shape) -> tuple[torch.Tensor, str]:
    from .prior import test_image_info, test_images

    images = test_images()
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(images):
        raise ValueError(f"index: expected a test image index in [0, {len(images) - 1}], got {index!r}")
    x = images[index]
    label = int(test_image_info()["labels"][index])
    C, H, W = x_shape
    if C == 1:
        x = x.mean(0, keepdim=True)
    elif C != 3:
        raise ValueError(f"model: takes {C} channels; the shipped test images are RGB (give --image for a grey model)")
    if tuple(x.shape[1:]) != (H, W):
        x = F.interpolate(x[None], size=(H, W), mode="bicubic", antialias=True, align_corners=False)[0].clamp(-1, 1)
    return x.contiguous(), f"test image {index} (digit {label})"


def _image_input(image, index, x_shape, task) -> tuple[torch.Tensor, str]:
    if image is None:
        return _test_image(index, x_shape)
    if isinstance(image, torch.Tensor):
        x = image.detach().to("cpu", torch.float32)
        if tuple(x.shape) != tuple(x_shape):
            if task.channels is not None and x.dim() == 3 and x.shape[0] not in task.channels:
                task.check_shape(tuple(x.shape))  # raises with the task's own message
            raise ValueError(f"image: expected a tensor of shape {tuple(x_shape)} in [-1, 1] for this model, got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("image: contains NaN or inf")
        return x.clone(), "the given tensor"
    return load_image(image, x_shape, need_colour=task.name == "colorize"), str(image)


# ------------------------------------------------------------------------------ statistics


def _moments(result, clip: bool = True) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Posterior mean and per-pixel std: over the weighted particles when the sampler returned
    them, else over the samples (std 0 with one sample)."""
    def prep(t):
        t = t.detach().to("cpu", torch.float64)
        return t.clamp(-1.0, 1.0) if clip else t

    if result.particles is not None and result.log_weights is not None:
        p = prep(result.particles)  # (B, N, C, H, W)
        w = torch.softmax(result.log_weights.detach().to("cpu", torch.float64), dim=1)  # (B, N)
        w = w.view(*w.shape, *([1] * (p.dim() - 2))) / p.shape[0]
        mean = (w * p).sum((0, 1))
        var = (w * (p - mean) ** 2).sum((0, 1))
        B, N = p.shape[:2]
        return mean.float(), var.sqrt().float(), f"{B} x {N} weighted particles"
    s = prep(result.samples)
    mean = s.mean(0)
    std = s.std(0) if s.shape[0] > 1 else torch.zeros_like(mean)
    return mean.float(), std.float(), f"{s.shape[0]} samples"


def _scores(images: torch.Tensor, ref: torch.Tensor, lpips_weights, device) -> dict[str, list[float]]:
    out = {"psnr": metrics.psnr(images, ref).tolist(), "ssim": metrics.ssim(images, ref).tolist()}
    if lpips_weights is not None:
        out["lpips"] = metrics.lpips_distance(images, ref, lpips_weights, device=device).tolist()
    return out


# ------------------------------------------------------------------------------ the run


def restore(task, sampler="dcps", image=None, sigma_y=None, num_samples=4, particles=64, steps=None, model=None,
            out_dir="restore_out", seed=0, progress=True, device=None, *, index=0, lpips=None, denoiser=None,
            prior=None, task_options=None, sampler_options=None, max_batch=None) -> dict:
    """Restore one image and report the metrics (module docstring).

    Args:
        task: a task name of :mod:`fkdiff.problems.images` (``inpaint-box``, ``inpaint-random``,
            ``outpaint-half``, ``sr4``, ``deblur-gauss``, ``colorize``) or an
            :class:`~fkdiff.problems.images.ImageTask`.
        sampler: ``dcps`` (default), ``mcgdiff``, ``dps``, ``pigdm`` or ``ddrm`` (image
            defaults: :data:`SAMPLER_DEFAULTS`). DCPS is the default because it restores best
            with the shipped prior (posterior mean above the classical method on 5 of 5 test
            images for random-pixel inpainting, where MCGdiff with 64 particles loses on all 5:
            its samples keep the observed pixels but draw a digit that ignores them, the "image
            inconsistency" the talk names as DCPS's motivation; bench/RESULTS.md).
        image: a PNG/JPEG path (:func:`load_image`), a ``(C, H, W)`` tensor in ``[-1, 1]`` of the
            model's shape, or None: the shipped test image ``index``.
        sigma_y: observation noise std in ``[-1, 1]`` units (default: the task's, 0.05); 0 is
            noiseless.
        num_samples: independent posterior samples (sampler runs).
        particles: MCGdiff's particles per sample.
        steps: the sampler's step count (default: its image default).
        model: a diffusers folder (default: the shipped prior, :func:`fkdiff.prior.load_prior`).
        out_dir: where the figure ``restore_<task>_<sampler>.png`` and its ``.json`` go; None
            writes nothing.
        seed: seeds one ``torch.Generator``: the observation noise, then the sampler's key.
        progress: tqdm bars over the sampler's steps.
        device: where the network and the sampler run (default: CUDA when available).
        index: which shipped test image when ``image`` is None.
        lpips: path of LPIPS weights (:func:`fkdiff.metrics.load_lpips`) to add LPIPS.
        denoiser: a ready :class:`~fkdiff.diffusion.Denoiser` instead of ``model`` (tests, or a
            network already in memory); its shape is its ``x_shape`` attribute, else its
            adapter's, else the image's, else 3 x 32 x 32.
        prior: an fkdiff prior file (``fkdiff train-prior --out PATH``) instead of the shipped
            weights.
        task_options: options of the task (e.g. ``{"bicubic": True}`` for ``sr4``).
        sampler_options: constructor arguments over the sampler's defaults.
        max_batch: rows per network call (default :func:`default_max_batch`).

    Returns:
        A dict: ``task``, ``sampler`` (labels), ``x`` (ground truth), ``y``, ``observation``
        (displayable), ``classical``, ``samples`` (raw sampler output, ``(num_samples, C, H,
        W)``), ``mean``, ``std``, ``metrics`` (``{"samples": {"psnr": [...], "ssim": [...]},
        "mean": {...}, "classical": {...}}``, per sample lists, LPIPS when asked), ``nfe``,
        ``seconds``, ``figure`` and ``json`` paths (None without ``out_dir``), and the settings.

    Raises:
        ValueError: unknown task or sampler, bad sizes, an image or model that cannot be used
            (wrong channel count for colorize, not a diffusers folder, ...).
        FileNotFoundError: a missing image file or model folder, the shipped prior not trained
            yet, missing LPIPS weights.
    """
    task = get_task(task, **(task_options or {}))
    sampler = _check_sampler(sampler)
    num_samples = _positive("num_samples", num_samples)
    particles = _positive("particles", particles)
    steps = _positive("steps", steps, allow_none=True)
    if isinstance(sigma_y, bool) or sigma_y is not None and (not isinstance(sigma_y, (int, float)) or not math.isfinite(sigma_y) or sigma_y < 0):
        raise ValueError(f"sigma_y: expected a finite number >= 0, got {sigma_y!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if lpips is not None:
        metrics.load_lpips(lpips, dev)  # fail before sampling

    # the prior
    if sum(v is not None for v in (denoiser, model, prior)) > 1:
        raise ValueError("denoiser, model, prior: give at most one of them")
    if denoiser is None:
        if model is not None:
            denoiser = load_model(model, dev)
            model_name = str(model)
        else:
            from .prior import load_prior

            try:
                denoiser = load_prior(prior, device=dev)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"{err} (or restore with a diffusers model: --model PATH)") from None
            model_name = "shipped prior (coloured MNIST DDPM)" if prior is None else f"prior {prior}"
    else:
        model_name = type(denoiser).__name__
    x_shape = _model_shape(denoiser, image)
    task.check_shape(x_shape)

    # the problem
    x, source = _image_input(image, index, x_shape, task)
    operator = task.operator(x_shape)
    sigma = float(task.sigma_y if sigma_y is None else sigma_y)
    gen = torch.Generator().manual_seed(seed)
    y = observe(operator, x, sigma, gen)
    classical = task.classical(operator, y, sigma).clamp(-1.0, 1.0)
    observation = task.display(operator, y).clamp(-1.0, 1.0)

    # sampling
    samp = make_sampler(sampler, steps, particles, denoiser.num_timesteps,
                        max_batch if max_batch is not None else default_max_batch(x_shape), **(sampler_options or {}))
    start = time.perf_counter()
    result = samp(denoiser, operator, y.to(dev), sigma, num_samples=num_samples, generator=gen, progress=progress)
    seconds = time.perf_counter() - start
    samples = result.samples.detach().to("cpu", torch.float32)
    clipped = samples.clamp(-1.0, 1.0)
    mean, std, mean_from = _moments(result)

    # metrics
    lp_dev = dev if lpips is not None else None
    scores = {
        "samples": _scores(clipped, x, lpips, lp_dev),
        "mean": {k: v[0] for k, v in _scores(mean[None], x, lpips, lp_dev).items()},
        "classical": {k: v[0] for k, v in _scores(classical[None], x, lpips, lp_dev).items()},
    }
    out = {
        "task": task.name,
        "task_description": task.description,
        "task_settings": task.settings(),
        "classical_name": task.classical_name,
        "sampler": sampler,
        "sampler_label": sampler_label(samp),
        "sampler_settings": {k: v for k, v in vars(samp).items() if isinstance(v, (int, float, str, bool, type(None)))},
        "model": model_name,
        "image": source,
        "x_shape": list(x_shape),
        "sigma_y": sigma,
        "seed": seed,
        "num_samples": num_samples,
        "device": str(dev),
        "x": x,
        "y": y,
        "observation": observation,
        "classical": classical,
        "samples": samples,
        "mean": mean,
        "std": std,
        "mean_from": mean_from,
        "metrics": scores,
        "nfe": float(result.nfe),
        "vjp": float(result.vjp),
        "seconds": seconds,
        "figure": None,
        "json": None,
    }
    if out_dir is not None:
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"restore_{task.name}_{sampler}"
        out["figure"] = str(_figure(folder / f"{stem}.png", out))
        out["json"] = str(_write_json(folder / f"{stem}.json", out))
    return out


# ------------------------------------------------------------------------------ outputs


def _finite(v):
    """JSON-safe number: inf and NaN become None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _write_json(path: Path, out: dict) -> Path:
    m = out["metrics"]
    record = {
        key: out[key]
        for key in ("task", "task_description", "task_settings", "classical_name", "sampler", "sampler_label",
                    "sampler_settings", "model", "image", "x_shape", "sigma_y", "seed", "num_samples", "device",
                    "mean_from", "nfe", "vjp", "seconds")
    }
    record["metrics"] = {
        "samples": {k: [_finite(v) for v in vals] for k, vals in m["samples"].items()},
        "mean": {k: _finite(v) for k, v in m["mean"].items()},
        "classical": {k: _finite(v) for k, v in m["classical"].items()},
    }
    record["notes"] = ("images in [-1, 1], clipped to it before the metrics; PSNR with data_range 2; SSIM from "
                       "scikit-image (7 x 7 uniform window); null = infinite (identical images)")
    record["figure"] = out["figure"]
    path.write_text(json.dumps(record, indent=2))
    return path


def _score_text(s: dict) -> str:
    text = f"{s['psnr']:.2f} dB / {s['ssim']:.3f}"
    if "lpips" in s:
        text += f"\nLPIPS {s['lpips']:.3f}"
    return text


def _figure(path: Path, out: dict, max_samples: int = 8) -> Path:
    """One row of panels drawn as a single mosaic image (one axes: fast to render), titles
    above, a colour bar for the std heat map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib import cm, colors

    m = out["metrics"]
    samples = out["samples"].clamp(-1, 1)
    shown = min(samples.shape[0], max_samples)
    per = lambda i: {k: v[i] for k, v in m["samples"].items()}  # noqa: E731
    panels = [("ground truth", out["x"], None), ("observation", out["observation"], None),
              (f"classical ({out['classical_name']})", out["classical"], m["classical"])]
    panels += [(f"sample {i + 1}", samples[i], per(i)) for i in range(shown)]
    panels += [("posterior mean", out["mean"], m["mean"])]

    def rgb(img):
        a = ((img.detach().to("cpu", torch.float32).clamp(-1, 1) + 1) / 2).numpy()
        return np.repeat(a, 3, axis=0).transpose(1, 2, 0) if a.shape[0] == 1 else a.transpose(1, 2, 0)

    heat = out["std"].mean(0).numpy()
    vmax = float(heat.max()) if heat.size and float(heat.max()) > 0 else 1.0
    norm = colors.Normalize(vmin=0.0, vmax=vmax)
    cmap = matplotlib.colormaps["magma"]
    tiles = [rgb(img) for _, img, _ in panels] + [cmap(norm(heat))[..., :3]]
    H, W = tiles[0].shape[:2]
    gap = max(2, W // 8)
    n = len(tiles)
    canvas = np.ones((H, n * W + (n - 1) * gap, 3))
    for k, tile in enumerate(tiles):
        canvas[:, k * (W + gap): k * (W + gap) + W] = tile

    # inches: 1.6 per panel across; the image's height follows; 0.85 above it for the titles
    img_w = 1.6 * n
    img_h = img_w * canvas.shape[0] / canvas.shape[1]
    fig_w, fig_h = img_w + 0.75, img_h + 0.95
    fig = plt.figure(figsize=(fig_w, fig_h))
    rect = [0.1 / fig_w, 0.1 / fig_h, img_w / fig_w, img_h / fig_h]
    ax = fig.add_axes(rect)
    ax.imshow(canvas, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    titles = [title + ("\n" + _score_text(score) if score else "") for title, _, score in panels]
    titles.append("per-pixel std\n(mean over channels)")
    for k, title in enumerate(titles):
        ax.text(k * (W + gap) + W / 2 - 0.5, -1.5, title, ha="center", va="bottom", fontsize=7)
    cax = fig.add_axes([(img_w + 0.18) / fig_w, rect[1], 0.1 / fig_w, rect[3]])
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.ax.tick_params(labelsize=6)
    more = f" (first {shown} of {samples.shape[0]} samples shown)" if shown < samples.shape[0] else ""
    fig.suptitle(f"{out['task']}: {out['task_description']}, sigma_y = {out['sigma_y']:g} ([-1, 1] units); "
                 f"{out['sampler_label']}; PSNR / SSIM{more}", fontsize=8, y=1 - 0.08 / fig_h, va="top")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_table(out: dict) -> str:
    """The metrics as a small text table: each sample, the posterior mean, the classical
    reconstruction."""
    m = out["metrics"]
    has_lpips = "lpips" in m["classical"]
    head = f"{'':<28} {'PSNR (dB)':>10} {'SSIM':>7}" + (f" {'LPIPS':>7}" if has_lpips else "")
    rows = [head]

    def row(name, s):
        line = f"{name:<28} {s['psnr']:>10.2f} {s['ssim']:>7.3f}"
        if has_lpips:
            line += f" {s['lpips']:>7.3f}"
        return line

    n = len(m["samples"]["psnr"])
    for i in range(n):
        rows.append(row(f"sample {i + 1}", {k: v[i] for k, v in m["samples"].items()}))
    rows.append(row("posterior mean", m["mean"]))
    rows.append(row(f"classical ({out['classical_name']})", m["classical"]))
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fkdiff restore", description=__doc__.split("\n\n")[0].replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="tasks: " + ", ".join(task_names()) + "; samplers: " + ", ".join(SAMPLERS))
    p.add_argument("--task", required=True, choices=task_names(), help="the degradation")
    p.add_argument("--sampler", default="dcps", choices=SAMPLERS,
                   help="(default %(default)s: the best posterior means on images, bench/RESULTS.md)")
    p.add_argument("--image", default=None, metavar="PATH", help="PNG/JPEG to restore (default: a shipped test image)")
    p.add_argument("--index", type=int, default=0, help="which shipped test image without --image (default %(default)s)")
    p.add_argument("--sigma-y", type=float, default=None, help="noise std in [-1, 1] units (default: the task's, 0.05)")
    p.add_argument("--num-samples", type=int, default=4, help="posterior samples (default %(default)s)")
    p.add_argument("--particles", type=int, default=64, help="MCGdiff particles per sample (default %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the sampler's image default)")
    p.add_argument("--model", default=None, metavar="PATH", help="a diffusers model folder (default: the shipped prior)")
    p.add_argument("--prior", default=None, metavar="PATH",
                   help="an fkdiff prior file (fkdiff train-prior --out PATH) instead of the shipped weights")
    p.add_argument("--out", default="restore_out", metavar="DIR", help="output folder (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="e.g. cpu, cuda (default: cuda when available)")
    p.add_argument("--lpips", default=None, metavar="PATH", help="LPIPS weights (TorchScript, or an lpips.LPIPS state dict)")
    p.add_argument("--bicubic", action="store_true", help="sr4: antialiased bicubic downsampling instead of average pooling")
    p.add_argument("--max-batch", type=int, default=None, help="rows per network call (default: about 4M input values)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    task_options = {"bicubic": True} if args.bicubic else None
    if args.bicubic and args.task != "sr4":
        p.error("--bicubic: only with --task sr4")
    try:
        out = restore(args.task, args.sampler, image=args.image, sigma_y=args.sigma_y, num_samples=args.num_samples,
                      particles=args.particles, steps=args.steps, model=args.model, prior=args.prior, out_dir=args.out, seed=args.seed,
                      progress=not args.no_progress, device=args.device, index=args.index, lpips=args.lpips,
                      task_options=task_options, max_batch=args.max_batch)
    except (ValueError, FileNotFoundError, ImportError) as err:
        p.exit(2, f"fkdiff restore: error: {err}\n")
    print(f"{out['task']} ({out['task_description']}), sigma_y = {out['sigma_y']:g}; {out['image']}; {out['model']}")
    print(f"{out['sampler_label']}, {out['num_samples']} samples on {out['device']}: {out['seconds']:.1f} s, "
          f"{out['nfe']:.0f} network rows per sample; posterior mean over {out['mean_from']}\n")
    print(format_table(out))
    print(f"\nFigure: {out['figure']}\nMetrics: {out['json']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
