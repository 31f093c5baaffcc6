"""Peak CPU memory at 3 x 256 x 256 (issue 4's memory point), one measurement per process.

    python bench/memory_images.py mcgdiff [MAX_BATCH]     # MCGdiff, N = 64, 5 steps
    python bench/memory_images.py dcps [MAX_BATCH]        # DCPS, 4 samples, 3 blocks x 6 steps
    python bench/memory_images.py ddpm256-forward ROWS    # the DDPM-256 UNet's forward alone

The samplers run box inpainting (sigma_y 0.05) with a two-layer conv net, so that the figure is
fkdiff's own memory plus the chunked network calls; ``ddpm256-forward`` measures what the public
256 x 256 DDPM network (diffusers' UNet2DModel, that layout, random weights) needs for one chunk
of ROWS rows. Peak RSS from ``getrusage`` (the process's high-water mark). Prints a line and a JSON
record. Results: RESULTS.md, "Memory at 3 x 256 x 256"."""
import json, platform, resource, sys, time, torch
import fkdiff
from fkdiff.adapters import from_network
from fkdiff.diffusion import linear_schedule
from fkdiff.operators import box_inpainting

def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

what = sys.argv[1]
torch.manual_seed(0)
shape = (3, 256, 256)
if what == "ddpm256-forward":
    from diffusers import UNet2DModel
    net = UNet2DModel(sample_size=256, in_channels=3, out_channels=3, layers_per_block=2,
                      block_out_channels=(128, 128, 256, 256, 512, 512),
                      down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                      up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4).eval()
    rows = int(sys.argv[2])
    before = rss_mb()
    t0 = time.time()
    with torch.no_grad():
        net(torch.randn(rows, *shape), torch.full((rows,), 500)).sample
    print(f"ddpm256 forward, {rows} rows: peak RSS {rss_mb():.0f} MB (before {before:.0f} MB), {time.time() - t0:.0f} s")
    print(json.dumps({"case": what, "rows": rows, "peak_rss_mb": rss_mb(), "before_mb": before,
                      "machine": platform.processor() or platform.machine(), "torch": torch.__version__}))
    sys.exit()

class Cheap(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(16, 3, 3, padding=1)
    def forward(self, x, t):
        return 0.1 * self.b(torch.tanh(self.a(x)))

den = from_network(Cheap().eval(), linear_schedule(1000))
op = box_inpainting(shape)
x = torch.rand(shape) * 2 - 1
from fkdiff.problems.images import observe
y = observe(op, x, 0.05, torch.Generator().manual_seed(1))
mb = int(sys.argv[2]) if len(sys.argv) > 2 else None
before = rss_mb()
t0 = time.time()
if what == "mcgdiff":
    s = fkdiff.MCGDiff(num_particles=64, num_steps=5, potential="pigdm", max_batch=mb)
    out = s(den, op, y, 0.05, num_samples=1, generator=torch.Generator().manual_seed(0), progress=False)
else:
    s = fkdiff.DCPS(num_blocks=3, num_steps=6, max_batch=mb)
    out = s(den, op, y, 0.05, num_samples=4, generator=torch.Generator().manual_seed(0), progress=False)
pop = 64 * 3 * 256 * 256 * 4 / 2**20
label = "MCGdiff N = 64" if what == "mcgdiff" else "DCPS, 4 samples"
print(f"{label}, 3 x 256 x 256, max_batch={mb}: peak RSS {rss_mb():.0f} MB (before {before:.0f} MB; one float32 population "
      f"of 64 x 196608 = {pop:.0f} MB), {time.time() - t0:.0f} s")
print(json.dumps({"case": what, "max_batch": mb, "peak_rss_mb": rss_mb(), "before_mb": before, "population_mb": pop,
                  "machine": platform.processor() or platform.machine(), "torch": torch.__version__}))
