"""Image benchmark: seconds per sampler step and per restored image with a real network, and the
share of the time spent outside the network (the sampler's own overhead).

Run ``python -m fkdiff.bench.images`` (or ``python bench/bench_images.py``; ``--help`` lists the
options). Samplers: ``fkdiff.MCGDiff(num_particles=64)`` (one restored image per call: the network
sees 64 rows per step) and ``fkdiff.DCPS()`` (``--dcps-samples`` images per call, default 1), each
with its default hyper-parameters otherwise. Problem: box inpainting (``box_inpainting(x_shape)``,
the centred half-size box hidden), ``y = A x + 0.05 z`` with ``x`` the first of
``fkdiff.prior.test_images()`` (resized bilinearly to the network's size; random when the prior
package is missing), float32.

Networks (``--networks``):

* ``prior32``: the shipped 3 x 32 x 32 prior (``fkdiff.prior.load_prior()``); while no weights
  file exists, its network class ``fkdiff.prior.UNet`` with the shipped layout and random weights.
* ``unet64``: the same UNet class at 64 x 64, one level deeper (``mults=(1, 2, 2, 2)``), random
  weights.
* ``ddpm256``: the network of the public 256 x 256 DDPM checkpoints (google/ddpm-church-256,
  -bedroom-256, -cat-256, -celebahq-256: ``UNet2DModel`` with ``block_out_channels=(128, 128, 256,
  256, 512, 512)``, attention at 16 x 16, 2 layers per block, 113.7 M parameters), built from that
  config with random weights and wrapped with :func:`fkdiff.adapters.from_diffusers` and a
  ``DDPMScheduler`` (linear betas 1e-4..0.02, T = 1000). Without diffusers it falls back, with a
  note, to ``ddpm256-fkdiff``: ``fkdiff.prior.UNet`` in the same layout (the same 113,673,219
  parameters, the same convolutions and attention), through :func:`fkdiff.adapters.from_network`.
  ``--require-diffusers`` skips the row instead.

Speed does not depend on the weights' values. The fkdiff UNet zero-initialises its output
convolutions (the network would output exactly 0): with random weights those are filled with
N(0, 0.02^2) so the samplers see a non-trivial denoiser.

What is timed. Each sampler call runs with its default step count and is stopped (an exception
raised from the sampler's once-per-step ``DenoiserCalls.check``) after ``--mcgdiff-steps`` /
``--dcps-steps`` steps; each step's wall time is the time between two such checks (the first
step of a call also holds the call's setup: left out of the medians, reported in the JSON). The
network is wrapped so that every forward call's time is accumulated, and, where a sampler
differentiates through it (DCPS), every backward pass too: identity autograd nodes around the
network mark the start and the end of its backward. ``outside = step - network``: everything that
is not the user's network (the sampler's kernels and bookkeeping, the SVD rotations, the adapter's
conversions, the finiteness checks). CPU: ``time.perf_counter``. CUDA (``--cuda-timing``):
``events`` (default) records a CUDA event pair around each forward / backward, and a step's network
time is the sum of their elapsed times (so the network's span on the GPU, launch gaps inside it
included; the sampler's own GPU work queued before it is not), each step boundary synchronising
the device first; ``sync`` synchronises the device before and after each network call and times
the wall clock (an upper bound on the overhead: it also forbids the overlap of the sampler's
Python with the network's kernels).

Per kind of step (MCGdiff: ``step``; DCPS: ``langevin`` (one forward + one backward) and
``variational`` (three forwards + two backwards with the default two gradient steps)): per repeat
the mean step time and network time of the counted steps; reported: the median step time over
``--repeats`` repeats (after one untimed warm-up call of the same length) and the median of the
repeats' outside shares, split as ``outside = share x step``, ``network = step - outside``.
Per restored image: ``sum over kinds of (steps of that kind in a default call) x (median step
time) / images per call`` (MCGdiff: 100 steps; DCPS: 3 x 5 Langevin + 300 variational steps),
setup and the cheaper last DCPS step into t = 0 ignored; the image's overhead share is the same
sum over the outside times divided by it.

Targets (issue): outside share at most 10% on a CPU at 32 x 32 (``prior32``), at most 5% on a GPU
at 256 x 256 (``ddpm256``), float32. They are reported in the table and the JSON
(``target_met``); the exit status is 1 only when a case failed to run (130 when interrupted).

On a busy CPU run with ``--threads 1``: OpenMP threads that find their core taken wait on each
other (measured here at load 5 on 2 cores: the prior's network at batch 1 took 17 ms with one
thread and 380 ms with two).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

DEFAULT_CPU_NETWORKS = ("prior32", "unet64")
DEFAULT_CUDA_NETWORKS = ("ddpm256",)
NETWORKS = ("prior32", "unet64", "ddpm256", "ddpm256-fkdiff")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: (device type, image side) -> largest allowed outside share (the issue's targets)
TARGETS = {("cpu", 32): 0.10, ("cuda", 256): 0.05}

#: google/ddpm-{church,bedroom,cat,celebahq}-256's UNet2DModel config (the values that set the
#: architecture; the public config.json files list exactly these)
DDPM256_CONFIG = dict(
    sample_size=256, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0, flip_sin_to_cos=False,
    freq_shift=1, mid_block_scale_factor=1, norm_eps=1e-6, norm_num_groups=32, time_embedding_type="positional",
)
#: the same layout in fkdiff's own UNet class (fallback without diffusers)
DDPM256_FKDIFF = dict(channels=3, image_size=256, base=128, mults=(1, 1, 2, 2, 4, 4), blocks=2, attn_res=(16,),
                      mid_attn=True, heads=1, groups=32, dropout=0.0, timesteps=1000)


# ------------------------------------------------------------------------------------------------
# timing the network: forward calls and backward passes
# ------------------------------------------------------------------------------------------------


class NetworkClock:
    """Accumulates the time spent inside the network (forward calls and backward passes).

    ``mode``: ``"wall"`` (CPU: ``perf_counter``), ``"sync"`` (CUDA: synchronise, then
    ``perf_counter``, at both ends) or ``"events"`` (CUDA: an event pair per span, read at
    :meth:`seconds`, which callers invoke only after synchronising)."""

    def __init__(self, mode: str = "wall"):
        self.mode = mode
        self._seconds = 0.0
        self._pending: list = []
        self.forward_calls = 0
        self.backward_calls = 0
        self._open: dict[str, object] = {}

    def _mark(self):
        if self.mode == "events":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        if self.mode == "sync":
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self, what: str) -> None:
        self._open[what] = self._mark()

    def stop(self, what: str) -> None:
        begin = self._open.pop(what, None)
        if begin is None:  # pragma: no cover - a backward end without its start
            return
        end = self._mark()
        if self.mode == "events":
            self._pending.append((begin, end))
        else:
            self._seconds += end - begin
        if what == "forward":
            self.forward_calls += 1
        else:
            self.backward_calls += 1

    def seconds(self) -> float:
        """Network seconds so far (events mode: the device must have been synchronised)."""
        if self._pending:
            self._seconds += sum(b.elapsed_time(e) for b, e in self._pending) / 1e3
            self._pending.clear()
        return self._seconds


class _BackwardMark(torch.autograd.Function):
    """Identity whose backward calls ``clock.start("backward")`` or ``clock.stop("backward")``: on
    the network's output it runs before the network's backward (``"start"``), on its input after
    it (``"stop"``)."""

    @staticmethod
    def forward(ctx, x, clock, action):
        ctx.clock, ctx.action = clock, action
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        getattr(ctx.clock, ctx.action)("backward")
        return grad, None, None


class TimedNetwork(torch.nn.Module):
    """``net`` with its forward calls (and backward passes, when the input requires grad) timed
    by ``clock``; optionally under autocast. Returns a tensor (a diffusers output's ``.sample``)
    in the input's dtype."""

    def __init__(self, net: torch.nn.Module, clock: NetworkClock, autocast: torch.dtype | None = None):
        super().__init__()
        self.net = net
        self.clock = clock
        self.autocast = autocast

    def forward(self, x, timestep, **kwargs):
        clock = self.clock
        clock.start("forward")
        grad = torch.is_grad_enabled() and x.requires_grad
        xin = _BackwardMark.apply(x, clock, "stop") if grad else x
        ctx = torch.autocast(x.device.type, dtype=self.autocast) if self.autocast is not None else contextlib.nullcontext()
        with ctx:
            out = self.net(xin, timestep, **kwargs)
        if not isinstance(out, torch.Tensor):
            out = out.sample if hasattr(out, "sample") else out[0]
        if out.dtype != x.dtype:
            out = out.to(x.dtype)
        if grad:
            out = _BackwardMark.apply(out, clock, "start")
        clock.stop("forward")
        return out


# ------------------------------------------------------------------------------------------------
# step boundaries: the samplers' once-per-step DenoiserCalls.check
# ------------------------------------------------------------------------------------------------


class _EnoughSteps(Exception):
    """Raised from the patched check once the requested steps are timed."""


class StepRecorder:
    """Per-step wall and network time between consecutive ``DenoiserCalls.check`` calls."""

    def __init__(self, clock: NetworkClock, limit: int, cuda: bool):
        self.clock, self.limit, self.cuda = clock, limit, cuda
        self.steps: list[dict] = []

    def begin(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self._t = time.perf_counter()
        self._net = self.clock.seconds()
        self._fwd, self._bwd = self.clock.forward_calls, self.clock.backward_calls

    def tick(self, where: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        t, net = time.perf_counter(), self.clock.seconds()
        fwd, bwd = self.clock.forward_calls, self.clock.backward_calls
        kind = "langevin" if "langevin" in where.lower() else ("variational" if where.startswith("DCPS") else "step")
        self.steps.append({"kind": kind, "where": where, "seconds": t - self._t, "net_seconds": net - self._net,
                           "forward": fwd - self._fwd, "backward": bwd - self._bwd})
        self._t, self._net, self._fwd, self._bwd = t, net, fwd, bwd
        if len(self.steps) >= self.limit:
            raise _EnoughSteps


@contextlib.contextmanager
def step_boundaries(recorder: StepRecorder):
    from fkdiff.samplers import base

    original = base.DenoiserCalls.check

    def check(self, where):
        original(self, where)
        recorder.tick(where)

    base.DenoiserCalls.check = check
    try:
        yield
    finally:
        base.DenoiserCalls.check = original


# ------------------------------------------------------------------------------------------------
# networks and the problem
# ------------------------------------------------------------------------------------------------


def _fill_zero_layers(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights for fkdiff's UNet: its zero-initialised layers get N(0, 0.02^2)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def _fkdiff_unet(config: dict, device):
    from fkdiff.prior.unet import UNet

    torch.manual_seed(0)
    model = UNet(**config)
    _fill_zero_layers(model)
    return model.eval().requires_grad_(False).to(device)


def build_network(name: str, device: torch.device, require_diffusers: bool = False, prior_path=None):
    """``(denoiser, info dict)`` for one of :data:`NETWORKS` on ``device``; raises to skip it."""
    from fkdiff.diffusion import EpsilonDenoiser, linear_schedule

    info = {"network": name}
    if name == "prior32":
        from fkdiff.prior import loader

        try:
            den = loader.load_prior(prior_path, device=device)
            info["weights"] = f"trained ({prior_path or loader.DEFAULT_WEIGHTS})"
        except FileNotFoundError:
            try:
                from fkdiff.prior.train import DEFAULT_MODEL
            except ImportError:  # pragma: no cover - the training module is optional here
                DEFAULT_MODEL = {}
            model = _fkdiff_unet(dict(DEFAULT_MODEL), device)
            den = EpsilonDenoiser(model, linear_schedule(1000))
            info["weights"] = "random (no prior weights file yet)"
        info["detail"] = f"fkdiff.prior.UNet {dict(den.model.config)}"
        info["x_shape"] = (3, 32, 32)
        return den, info
    if name == "unet64":
        model = _fkdiff_unet(dict(image_size=64, mults=(1, 2, 2, 2)), device)
        info.update(weights="random", detail=f"fkdiff.prior.UNet {model.config}", x_shape=(3, 64, 64))
        return EpsilonDenoiser(model, linear_schedule(1000)), info
    if name in ("ddpm256", "ddpm256-fkdiff"):
        from fkdiff.adapters import from_diffusers, from_network

        diffusers = None
        if name == "ddpm256":
            try:
                import diffusers
                from diffusers import DDPMScheduler, UNet2DModel  # noqa: F401 - lazy modules: load them here
            except Exception as err:  # noqa: BLE001 - ImportError, or a broken install
                if require_diffusers:
                    raise RuntimeError(f"diffusers is not importable ({err}); skipped (--require-diffusers)") from err
                info["network_note"] = f"diffusers is not importable ({err}): fkdiff's UNet in the same layout instead"
                print(f"note: {info['network_note']}", file=sys.stderr)
        info["weights"] = "random"
        if diffusers is not None:
            size = DDPM256_CONFIG["sample_size"]
            info["x_shape"] = (DDPM256_CONFIG["in_channels"], size, size)
            torch.manual_seed(0)
            unet = diffusers.UNet2DModel(**DDPM256_CONFIG).eval().requires_grad_(False).to(device)
            sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
            den = from_diffusers(unet, sched)
            info["detail"] = f"diffusers {diffusers.__version__} UNet2DModel (google/ddpm-*-256 config)"
            return den, info
        model = _fkdiff_unet(DDPM256_FKDIFF, device)
        size = DDPM256_FKDIFF["image_size"]
        info["x_shape"] = (DDPM256_FKDIFF["channels"], size, size)
        info["network"] = "ddpm256-fkdiff"
        info["detail"] = f"fkdiff.prior.UNet in the DDPM-256 layout {DDPM256_FKDIFF}"
        return from_network(model, linear_schedule(1000), input_shape=info["x_shape"]), info
    raise ValueError(f"unknown network {name!r} (expected one of {NETWORKS})")


def network_module(den) -> tuple[object, str]:
    """``(owner, attribute)`` of the raw network inside a denoiser (inside the adapter if any)."""
    from fkdiff.adapters import NetworkAdapter

    owner = den.model if isinstance(den.model, NetworkAdapter) else den
    return owner, "model"


def make_problem(x_shape, device, sigma_y: float, seed: int = 0):
    from fkdiff.operators import box_inpainting

    g = torch.Generator().manual_seed(seed)
    try:
        from fkdiff.prior import test_images

        x = test_images(1)
        source = "fkdiff.prior.test_images()[0]"
    except Exception:  # noqa: BLE001 - the prior package is optional for the benchmark
        x = torch.randn(1, 3, 32, 32, generator=g).clamp(-1, 1)
        source = "random"
    if tuple(x.shape[1:]) != tuple(x_shape):
        x = torch.nn.functional.interpolate(x, size=tuple(x_shape[1:]), mode="bilinear", align_corners=False)
        source += f" resized to {x_shape[1]} x {x_shape[2]}"
    op = box_inpainting(x_shape)
    y = op.A(x) + sigma_y * torch.randn(x.shape, generator=g)
    return op, y.to(device), source


# ------------------------------------------------------------------------------------------------
# one (network, sampler, precision) case
# ------------------------------------------------------------------------------------------------


def make_sampler(kind: str, args):
    import fkdiff

    if kind == "mcgdiff":
        s = fkdiff.MCGDiff(num_particles=args.particles)
        return s, 1, {"step": s.num_steps}, args.mcgdiff_steps
    if kind == "dcps":
        s = fkdiff.DCPS()
        counts = {"langevin": s.num_blocks * s.langevin_steps,
                  "variational": s.num_steps - (0 if s.final == "exact" else 1)}
        return s, args.dcps_samples, counts, args.dcps_steps
    raise ValueError(f"unknown sampler {kind!r}")


def run_case(den, clock, op, y, sigma_y, sampler_name, args, cuda: bool) -> dict:
    sampler, B, counts, steps = make_sampler(sampler_name, args)

    def one_call(seed):
        rec = StepRecorder(clock, steps, cuda)
        with step_boundaries(rec):
            rec.begin()
            try:
                sampler(den, op, y, sigma_y, num_samples=B, generator=torch.Generator().manual_seed(seed), progress=False)
            except _EnoughSteps:
                pass
        return rec.steps

    one_call(0)  # warm-up, same length, untimed
    per_repeat, first = [], []
    for r in range(args.repeats):
        steps_done = one_call(r + 1)
        first.append(steps_done[0]["seconds"] if steps_done else None)
        per_repeat.append(steps_done[1:])

    kinds = {}
    for kind, count in counts.items():
        secs, nets, fwd, bwd = [], [], [], []
        for rep in per_repeat:
            mine = [s for s in rep if s["kind"] == kind]
            if not mine:
                continue
            secs.append(sum(s["seconds"] for s in mine) / len(mine))
            nets.append(sum(s["net_seconds"] for s in mine) / len(mine))
            fwd.append(sum(s["forward"] for s in mine) / len(mine))
            bwd.append(sum(s["backward"] for s in mine) / len(mine))
        if not secs:
            kinds[kind] = {"per_image_call": count, "timed": 0}
            continue
        # the median step time, and the median of the repeats' outside shares (so that
        # step = network + outside holds in the table)
        step_s = statistics.median(secs)
        share = statistics.median([(s - n) / s for s, n in zip(secs, nets)])
        kinds[kind] = {
            "per_image_call": count, "timed": sum(1 for rep in per_repeat for s in rep if s["kind"] == kind),
            "step_seconds": step_s, "net_seconds": step_s * (1 - share), "outside_seconds": step_s * share,
            "outside_share": share,
            "forward_per_step": statistics.median(fwd), "backward_per_step": statistics.median(bwd),
            "repeat_step_seconds": secs, "repeat_net_seconds": nets,
        }
    row = {"sampler": sampler_name, "settings": repr(sampler), "images_per_call": B,
           "rows_per_call": B * getattr(sampler, "num_particles", 1), "steps_per_call_timed": steps,
           "repeats": args.repeats, "kinds": kinds, "first_step_seconds": first}
    if all("step_seconds" in k for k in kinds.values()):
        total = sum(k["per_image_call"] * k["step_seconds"] for k in kinds.values())
        outside = sum(k["per_image_call"] * k["outside_seconds"] for k in kinds.values())
        row["seconds_per_call"] = total
        row["seconds_per_image"] = total / B
        row["outside_share"] = outside / total
    else:
        row["note"] = "a kind of step was not reached: raise --mcgdiff-steps / --dcps-steps"
    return row


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _s(x):
    return "-" if x is None else (f"{x:.4f}" if x < 1 else f"{x:.3g}" if x < 100 else f"{x:.0f}")


def print_table(rows, header):
    print(header)
    hdr = (f"{'network':15} {'dev':4} {'prec':4} {'sampler':13} {'rows':>4} {'kind':11} {'s/step':>8} {'net s':>8} "
           f"{'outside':>8} {'share':>6} {'steps':>5} {'s/image':>8} {'share/img':>9}  target")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if "error" in r:
            print(f"{r['network']:15} {r['device']:4} {r['precision']:4} {r['sampler']:13} skipped: {r['error']}")
            continue
        name = "MCGdiff N=%d" % r["rows_per_call"] if r["sampler"] == "mcgdiff" else f"DCPS B={r['images_per_call']}"
        kinds = list(r["kinds"].items())
        for i, (kind, k) in enumerate(kinds):
            last = i == len(kinds) - 1
            tail = ""
            if last:
                tgt = r.get("target")
                if tgt is None:
                    verdict = "-"
                elif r.get("target_met") is None:
                    verdict = f"<= {tgt:.0%}: not measured ({r.get('note', '?')})"
                else:
                    verdict = f"<= {tgt:.0%}: " + ("met" if r["target_met"] else "NOT met")
                tail = f" {_s(r.get('seconds_per_image')):>8} {_pct(r.get('outside_share')):>9}  {verdict}"
            else:
                tail = f" {'':>8} {'':>9}"
            lead = (f"{r['network']:15} {r['device']:4} {r['precision']:4} {name:13} {r['rows_per_call']:>4}" if i == 0
                    else f"{'':15} {'':4} {'':4} {'':13} {'':>4}")
            print(f"{lead} {kind:11} {_s(k.get('step_seconds')):>8} {_s(k.get('net_seconds')):>8} "
                  f"{_s(k.get('outside_seconds')):>8} {_pct(k.get('outside_share')):>6} {k['per_image_call']:>5}{tail}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fkdiff.bench.images", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--networks", nargs="*", default=None, choices=NETWORKS,
                   help=f"default: {' '.join(DEFAULT_CPU_NETWORKS)} on a CPU, {' '.join(DEFAULT_CUDA_NETWORKS)} on a GPU")
    p.add_argument("--samplers", nargs="*", default=["mcgdiff", "dcps"], choices=("mcgdiff", "dcps"))
    p.add_argument("--precision", nargs="*", default=["fp32"], choices=tuple(PRECISIONS),
                   help="fp32 (default), and/or bf16 / fp16 autocast around the network (extra rows)")
    p.add_argument("--particles", type=int, default=64, help="MCGdiff N (default 64)")
    p.add_argument("--dcps-samples", type=int, default=1, help="DCPS images per call (default 1)")
    p.add_argument("--mcgdiff-steps", type=int, default=4, help="steps per timed MCGdiff call, the first left out (default 4)")
    p.add_argument("--dcps-steps", type=int, default=8,
                   help="steps per timed DCPS call, the first left out (default 8: 5 Langevin + 3 variational)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per case (default 3), after one warm-up call")
    p.add_argument("--sigma-y", type=float, default=0.05, help="observation noise (default 0.05)")
    p.add_argument("--cuda-timing", choices=("events", "sync"), default="events",
                   help="how the network is timed on a GPU (default events; see above)")
    p.add_argument("--require-diffusers", action="store_true", help="skip ddpm256 without diffusers (no fkdiff-UNet fallback)")
    p.add_argument("--prior", default=None, help="prior weights file (default: the shipped one, random weights without it)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--max-seconds", type=float, default=None, help="no new case after this many seconds")
    p.add_argument("--json", default=None, help="write the results here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    networks = args.networks or (DEFAULT_CUDA_NETWORKS if cuda else DEFAULT_CPU_NETWORKS)
    mode = args.cuda_timing if cuda else "wall"
    load0 = os.getloadavg()
    started = time.perf_counter()
    rows, interrupted, skipped = [], False, 0
    if not cuda and torch.get_num_threads() > 1 and load0[0] + torch.get_num_threads() > (os.cpu_count() or 1) + 0.5:
        print(f"note: load average {load0[0]:.1f} on {os.cpu_count()} cores and {torch.get_num_threads()} torch threads: "
              f"busy cores make OpenMP threads wait on each other (try --threads 1)", file=sys.stderr)
    total_cases = len(networks) * len(args.precision)
    done_cases = 0
    try:
        for net_name in networks:
            if args.max_seconds is not None and time.perf_counter() - started > args.max_seconds:
                break
            try:
                den, info = build_network(net_name, device, args.require_diffusers, args.prior)
            except Exception as err:  # noqa: BLE001 - one missing network must not stop the others
                for prec in args.precision:
                    for s in args.samplers:
                        rows.append({"network": net_name, "device": device.type, "precision": prec, "sampler": s,
                                     "error": f"{type(err).__name__}: {err}"})
                done_cases += len(args.precision)
                print(f"  {net_name}: skipped ({type(err).__name__}: {err})", file=sys.stderr, flush=True)
                continue
            owner, attr = network_module(den)
            raw = getattr(owner, attr)
            params = sum(p.numel() for p in raw.parameters())
            clock = NetworkClock(mode)
            timed = TimedNetwork(raw, clock)
            setattr(owner, attr, timed)
            op, y, source = make_problem(info["x_shape"], device, args.sigma_y)
            try:
                for prec in args.precision:
                    if args.max_seconds is not None and time.perf_counter() - started > args.max_seconds:
                        break
                    done_cases += 1
                    timed.autocast = PRECISIONS[prec]
                    for s in args.samplers:
                        row = dict(info, device=device.type, precision=prec, params=params,
                                   operator="box_inpainting (centred half-size box hidden)", sigma_y=args.sigma_y, y_from=source)
                        try:
                            row.update(run_case(den, clock, op, y, args.sigma_y, s, args, cuda))
                        except Exception as err:  # noqa: BLE001 - e.g. out of memory: report, go on
                            row.update(sampler=s, error=f"{type(err).__name__}: {err}")
                        tgt = TARGETS.get((device.type, info["x_shape"][1])) if prec == "fp32" else None
                        row["target"] = tgt
                        if tgt is not None and row.get("outside_share") is not None:
                            row["target_met"] = row["outside_share"] <= tgt
                        rows.append(row)
                        if "error" in row:
                            print(f"  {row['network']} {prec} {s}: {row['error']}", file=sys.stderr, flush=True)
                        else:
                            print(f"  {row['network']} {prec} {s}: {_s(row.get('seconds_per_image'))} s/image, outside "
                                  f"{_pct(row.get('outside_share'))}", file=sys.stderr, flush=True)
            finally:
                setattr(owner, attr, raw)
                del den, raw, owner, timed, op, y
                if cuda:
                    torch.cuda.empty_cache()
        skipped = total_cases - done_cases
        if skipped:
            print(f"--max-seconds {args.max_seconds:g} reached: {skipped} (network, precision) cases not run", file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: the table holds the cases finished so far", file=sys.stderr)
    load1 = os.getloadavg()

    if cuda:
        p = torch.cuda.get_device_properties(device)
        where = (f"{p.name}, CUDA {torch.version.cuda}, network timing: CUDA {mode}; cudnn.allow_tf32="
                 f"{torch.backends.cudnn.allow_tf32}, float32 matmul precision {torch.get_float32_matmul_precision()!r}")
    else:
        where = f"CPU, {torch.get_num_threads()} thread(s) of {os.cpu_count()} cores"
    header = (f"\nImage benchmark: {where}; torch {torch.__version__}; load avg before {load0[0]:.2f}, after {load1[0]:.2f}; "
              f"box inpainting, sigma_y {args.sigma_y:g}; medians of {args.repeats} repeats")
    print_table(rows, header)
    seen = set()
    for r in rows:
        if "detail" in r and r["network"] not in seen:
            seen.add(r["network"])
            note = f"; {r['network_note']}" if r.get("network_note") else ""
            print(f"{r['network']}: {r['detail']}; {r['params'] / 1e6:.2f} M parameters, {r['weights']} weights{note}")
    print("s/step, net s, outside: seconds per step of that kind (net = inside the network, forward + backward); "
          "steps: of that kind in one default call; s/image and share/img: extrapolated to the default call, per image")
    result = {"device": device.type, "where": where, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "platform": platform.platform(), "cpu_count": os.cpu_count(), "loadavg_before": load0,
              "loadavg_after": load1, "timing": mode, "wall_seconds": time.perf_counter() - started,
              "interrupted": interrupted, "cases_not_run": skipped, "args": vars(args), "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.json}")
    # like the kernel benchmark: 130 when interrupted, 1 when a case failed to run; a missed
    # target is reported in the table (and the JSON's target_met), not in the exit status
    return 130 if interrupted else (1 if any("error" in r for r in rows) else 0)


if __name__ == "__main__":
    sys.exit(main())
