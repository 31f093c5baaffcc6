"""Peak CPU memory at 3 x 256 x 256 (issue 4's memory point), one measurement per process.

    python bench/memory_images.py mcgdiff [MAX_BATCH]     # MCGdiff, N = 64, 5 steps
    python bench/memory_images.py dcps [MAX_BATCH]        # DCPS, 4 samples, 3 blocks x 6 steps
    python bench/memory_images.py ddpm256-forward ROWS    # the DDPM-256 UNet's forward alone

The samplers run the image benchmark's problem (``fkdiff.bench.images.make_problem``: box
inpainting, sigma_y 0.05) with a two-layer conv net, so that the figure is fkdiff's own memory
plus the chunked network calls; ``ddpm256-forward`` measures what the public 256 x 256 DDPM
network (diffusers' UNet2DModel in ``fkdiff.bench.images.DDPM256_CONFIG``, random weights) needs
for one chunk of ROWS rows. Peak RSS from ``getrusage`` (the process's high-water mark). Prints a
line and a JSON record. Results: RESULTS.md, "Memory at 3 x 256 x 256"."""

import json
import platform
import resource
import sys
import time

import torch

import fkdiff
from fkdiff.adapters import from_network
from fkdiff.bench.images import DDPM256_CONFIG, make_problem
from fkdiff.diffusion import linear_schedule

SHAPE = (3, 256, 256)
SIGMA_Y = 0.05
PARTICLES = 64


class Cheap(torch.nn.Module):
    """A two-layer conv net: the samplers' memory without a real network's activations."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(16, 3, 3, padding=1)

    def forward(self, x, t):
        return 0.1 * self.b(torch.tanh(self.a(x)))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ddpm256_forward(rows: int) -> tuple[str, dict]:
    from diffusers import UNet2DModel

    net = UNet2DModel(**DDPM256_CONFIG).eval()
    with torch.no_grad():
        net(torch.randn(rows, *SHAPE), torch.full((rows,), 500)).sample
    return f"ddpm256 forward, {rows} rows", {"rows": rows}


def sampler(name: str, max_batch: int | None) -> tuple[str, dict]:
    den = from_network(Cheap().eval(), linear_schedule(1000))
    op, y, _ = make_problem(SHAPE, "cpu", SIGMA_Y)
    gen = torch.Generator().manual_seed(0)
    if name == "mcgdiff":
        s, samples, label = fkdiff.MCGDiff(num_particles=PARTICLES, num_steps=5, potential="pigdm"), 1, f"MCGdiff N = {PARTICLES}"
    else:
        s, samples, label = fkdiff.DCPS(num_blocks=3, num_steps=6), 4, "DCPS, 4 samples"
    s(den, op, y, SIGMA_Y, num_samples=samples, generator=gen, progress=False, max_batch=max_batch)
    pop = PARTICLES * torch.Size(SHAPE).numel() * 4 / 2**20
    return (f"{label}, 3 x 256 x 256, max_batch={max_batch} (one float32 population of {PARTICLES} x "
            f"{torch.Size(SHAPE).numel()} = {pop:.0f} MB)"), {"max_batch": max_batch, "population_mb": pop}


def main() -> None:
    what = sys.argv[1]
    arg = int(sys.argv[2]) if len(sys.argv) > 2 else None
    torch.manual_seed(0)
    before, t0 = rss_mb(), time.time()
    label, record = ddpm256_forward(arg) if what == "ddpm256-forward" else sampler(what, arg)
    peak = rss_mb()
    print(f"{label}: peak RSS {peak:.0f} MB (before {before:.0f} MB), {time.time() - t0:.0f} s")
    print(json.dumps({"case": what, **record, "peak_rss_mb": peak, "before_mb": before,
                      "machine": platform.processor() or platform.machine(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
