"""Denoiser adapters: diffusers folders and objects, raw networks (learned variance, class labels,
devices and dtypes, grad mode), data-range conversions and the observation transform.

The diffusers tests use a tiny randomly initialised UNet2DModel (8x8, 42k parameters) saved to a
temporary folder; every denoiser output is compared with the same formulas written out by hand
from the raw network output and the scheduler's own ``alphas_cumprod``, in float64.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

import fkdiff
from fkdiff.adapters import (
    NetworkAdapter,
    from_diffusers,
    from_model_range,
    from_network,
    observation_to_model_range,
    parse_data_range,
    to_model_range,
)
from fkdiff.diffusion import EpsilonDenoiser, VDenoiser, X0Denoiser, linear_schedule
from fkdiff.operators import DenseOperator

ABAR = linear_schedule(1000)
CLASSES = {"epsilon": EpsilonDenoiser, "sample": X0Denoiser, "v_prediction": VDenoiser}
TIMES = (1, 10, 500, 1000)


def tiny_unet(out_channels=3, **kwargs):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=out_channels, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        **kwargs,
    )


def save(folder, unet, scheduler, layout):
    """``bare``: model and scheduler config in one folder; ``pipeline``: unet/ and scheduler/."""
    diffusers = pytest.importorskip("diffusers")
    if layout == "bare":
        unet.save_pretrained(folder)
        scheduler.save_pretrained(folder)
    else:
        diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return str(folder)


def by_hand(raw, x, abar, prediction_type):
    """``(x0hat, epshat)`` from the raw network output (float64 formulas)."""
    a, b = abar.sqrt(), (1 - abar).sqrt()
    if prediction_type == "epsilon":
        return (x - b * raw) / a, raw
    if prediction_type == "sample":
        return raw, (x - a * raw) / b
    return a * x - b * raw, b * x + a * raw


def raw_output(unet, x, t, **kwargs):
    """The network at its timestep ``t - 1``, input in the network's dtype, output in float64."""
    steps = torch.full((x.shape[0],), t - 1, dtype=torch.long)
    with torch.no_grad():
        return unet(x.to(unet.dtype), steps, **kwargs).sample.double()


def assert_matches(denoiser, unet, scheduler, prediction_type, x, **kwargs):
    abar_table = scheduler.alphas_cumprod.double()
    for t in TIMES:
        x0, eps = denoiser.denoise(x, t)
        assert x0.dtype == x.dtype and x0.shape == x.shape
        ref_x0, ref_eps = by_hand(raw_output(unet, x, t, **kwargs), x.double(), abar_table[t - 1], prediction_type)
        torch.testing.assert_close(x0.double(), ref_x0, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(eps.double(), ref_eps, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------
# diffusers
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["bare", "pipeline"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_from_diffusers_matches_hand_computation(tmp_path, layout, prediction_type):
    diffusers = pytest.importorskip("diffusers")
    scheduler_cls = diffusers.DDPMScheduler if layout == "bare" else diffusers.DDIMScheduler
    scheduler = scheduler_cls(num_train_timesteps=1000, prediction_type=prediction_type)
    unet = tiny_unet()
    path = save(tmp_path / "model", unet, scheduler, layout)

    den = from_diffusers(path)
    assert type(den) is CLASSES[prediction_type]
    assert den.prediction_type == prediction_type and den.data_range == (-1.0, 1.0)
    assert type(den.scheduler) is scheduler_cls
    # the table: a leading 1, then the scheduler's own alphas_cumprod in float64
    assert den.alphas_cumprod.dtype == torch.float64 and den.alphas_cumprod.shape == (1001,)
    assert den.alphas_cumprod[0] == 1
    assert torch.equal(den.alphas_cumprod[1:], scheduler.alphas_cumprod.double())
    loaded = den.model.model
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())

    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert_matches(den, unet.eval(), scheduler, prediction_type, x)
    # float32 inputs, and flat (batch, C*H*W) inputs (operators on vectors) give the same numbers
    x0_img, _ = den.denoise(x.float(), 500)
    x0_flat, eps_flat = den.denoise(x.float().reshape(4, -1), 500)
    assert x0_flat.shape == (4, 192) and eps_flat.shape == (4, 192)
    torch.testing.assert_close(x0_flat, x0_img.reshape(4, -1), rtol=0, atol=0)


def test_from_diffusers_objects_and_scheduler_folder(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                        prediction_type="v_prediction")
    unet = tiny_unet()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    from_objects = from_diffusers(unet, scheduler)
    assert isinstance(from_objects, VDenoiser) and not unet.training
    assert_matches(from_objects, unet, scheduler, "v_prediction", x)

    from_pipeline = from_diffusers(diffusers.DDPMPipeline(unet=unet, scheduler=scheduler))
    torch.testing.assert_close(from_pipeline.denoise(x, 300)[0], from_objects.denoise(x, 300)[0], rtol=0, atol=0)

    scheduler.save_pretrained(tmp_path / "sched")
    from_folder = from_diffusers(unet, str(tmp_path / "sched"))
    torch.testing.assert_close(from_folder.alphas_cumprod, from_objects.alphas_cumprod, rtol=0, atol=0)

    # a custom subfolder name; the scheduler is looked for beside the model
    path = tmp_path / "custom"
    save(path / "net", unet, scheduler, "bare")
    sub = from_diffusers(str(path), subfolder="net")
    torch.testing.assert_close(sub.denoise(x, 300)[1], from_objects.denoise(x, 300)[1], rtol=0, atol=0)

    # prediction_type overrides the scheduler's
    assert isinstance(from_diffusers(unet, scheduler, prediction_type="epsilon"), EpsilonDenoiser)


def test_from_diffusers_dtype_and_grad_mode(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000)
    unet = tiny_unet()
    den = from_diffusers(unet, scheduler, dtype=torch.float64)
    assert unet.dtype == torch.float64
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert_matches(den, unet, scheduler, "epsilon", x)
    x0, _ = den.denoise(x.float(), 20)  # float32 input, float64 network: the output follows the input
    assert x0.dtype == torch.float32

    # an object's parameters keep requires_grad, yet a plain call builds no graph
    assert all(p.requires_grad for p in unet.parameters())
    x0, eps = den.denoise(x, 20)
    assert not x0.requires_grad and not eps.requires_grad
    # an input that requires grad under grad mode gets the graph (DPS / DCPS differentiate here)
    xr = x.clone().requires_grad_(True)
    with torch.enable_grad():
        x0, _ = den.denoise(xr, 20)
        (g,) = torch.autograd.grad(x0.square().sum(), xr)
    assert g.shape == x.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    # the caller's no_grad wins
    with torch.no_grad():
        assert not den.denoise(xr, 20)[0].requires_grad


def test_from_diffusers_learned_variance_and_class_label(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, variance_type="learned_range")
    unet = tiny_unet(out_channels=6, num_class_embeds=10)
    path = save(tmp_path / "adm", unet, scheduler, "bare")
    den = from_diffusers(path, class_label=3)
    assert den.model.learned_variance is True and den.model.class_label == 3

    x = torch.randn(5, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    unet.eval()
    abar = scheduler.alphas_cumprod.double()
    for t in TIMES:
        steps = torch.full((5,), t - 1, dtype=torch.long)
        with torch.no_grad():
            raw = unet(x.float(), steps, class_labels=torch.full((5,), 3)).sample.double()
        assert raw.shape == (5, 6, 8, 8)
        ref_x0, ref_eps = by_hand(raw[:, :3], x, abar[t - 1], "epsilon")
        x0, eps = den.denoise(x, t)
        torch.testing.assert_close(x0, ref_x0, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(eps, ref_eps, rtol=1e-10, atol=1e-10)
    # the label matters (a different class gives a different prediction)
    other = from_diffusers(path, class_label=4)
    assert not torch.allclose(other.denoise(x, 500)[0], den.denoise(x, 500)[0])

    with pytest.raises(ValueError, match="class-conditional; pass class_label"):
        from_diffusers(path)
    with pytest.raises(ValueError, match=r"class in \[0, 9\]"):
        from_diffusers(path, class_label=10)
    with pytest.raises(ValueError, match="unconditional"):
        from_diffusers(tiny_unet(), scheduler, class_label=1)
    with pytest.raises(ValueError, match="3 input and 4 output channels"):
        from_diffusers(tiny_unet(out_channels=4), scheduler)


def test_from_diffusers_errors(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    unet = tiny_unet()

    with pytest.raises(ValueError, match="prediction_type: expected one of 'epsilon', 'sample', 'v_prediction'"):
        from_diffusers(str(save(tmp_path / "bad", unet, diffusers.DDPMScheduler(prediction_type="noise"), "bare")))
    with pytest.raises(ValueError, match="prediction_type"):
        from_diffusers(unet, diffusers.DDPMScheduler(), prediction_type="score")

    short = diffusers.DDPMScheduler(num_train_timesteps=1000)
    short.alphas_cumprod = short.alphas_cumprod[:500]
    with pytest.raises(ValueError, match="500 entries but num_train_timesteps is 1000"):
        from_diffusers(unet, short)
    with pytest.raises(ValueError, match="num_train_timesteps = 500"):
        from_diffusers(tiny_unet(num_train_timesteps=500), diffusers.DDPMScheduler(num_train_timesteps=1000))
    with pytest.raises(ValueError, match="no alphas_cumprod"):
        from_diffusers(unet, diffusers.ScoreSdeVeScheduler())

    with pytest.raises(FileNotFoundError, match="is not a folder"):
        from_diffusers(str(tmp_path / "does-not-exist"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_diffusers(str(tmp_path / "empty"))
    unet.save_pretrained(tmp_path / "no-scheduler")
    with pytest.raises(FileNotFoundError, match="no scheduler_config.json"):
        from_diffusers(str(tmp_path / "no-scheduler"))
    with pytest.raises(ValueError, match="needs its scheduler"):
        from_diffusers(unet)
    with pytest.raises(ValueError, match="data_range"):
        from_diffusers(unet, diffusers.DDPMScheduler(), data_range="[0,255]")


def test_missing_diffusers_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` fail
    with pytest.raises(ImportError, match=r'pip install "fkdiff\[diffusers\]"'):
        from_diffusers("anything")


# --------------------------------------------------------------------------------------------
# Raw networks
# --------------------------------------------------------------------------------------------


class Toy(torch.nn.Module):
    """A per-pixel network on (batch, C, H, W): a 1x1 convolution plus a timestep term; with
    ``extra`` it appends ``extra`` channels of junk (learned variance)."""

    def __init__(self, channels=2, extra=0, label_kwarg=None):
        super().__init__()
        torch.manual_seed(5)
        self.conv = torch.nn.Conv2d(channels, channels, 1)
        self.extra = extra
        self.label_kwarg = label_kwarg
        self.seen = []

    def forward(self, x, t, **kwargs):
        if self.label_kwarg is not None:
            assert set(kwargs) == {self.label_kwarg}
            self.seen.append(kwargs[self.label_kwarg])
        else:
            assert not kwargs
        out = self.conv(x) + 1e-3 * t.to(x.dtype)[:, None, None, None]
        if self.extra:
            out = torch.cat([out, 100 + torch.randn(x.shape[0], self.extra, *x.shape[2:], dtype=x.dtype)], 1)
        return out


@pytest.mark.parametrize("prediction_type", ["epsilon", "x0", "v"])
def test_learned_variance_keeps_first_channels(prediction_type):
    plain = from_network(Toy(), ABAR, prediction_type)
    x = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(6))
    for learned in (None, True):
        den = from_network(Toy(extra=2), ABAR, prediction_type, learned_variance=learned)
        for t in TIMES:
            for a, b in zip(den.denoise(x, t), plain.denoise(x, t)):
                torch.testing.assert_close(a, b, rtol=0, atol=0)

    with pytest.raises(ValueError, match="2C = 4.*learned_variance=True"):
        from_network(Toy(), ABAR, learned_variance=True).denoise(x, 5)
    with pytest.raises(ValueError, match="learned_variance=False"):
        from_network(Toy(extra=2), ABAR, learned_variance=False).denoise(x, 5)
    with pytest.raises(ValueError, match=r"returned shape \(3, 3, 4, 4\).*or 4 = 2C channels"):
        from_network(Toy(extra=1), ABAR).denoise(x, 5)


@pytest.mark.parametrize("label_kwarg", ["y", "class_labels"])
def test_class_label_through_keyword(label_kwarg):
    net = Toy(label_kwarg=label_kwarg)
    den = from_network(net, ABAR, class_label=torch.tensor(7), label_kwarg=label_kwarg)
    for batch in (2, 5):
        den.denoise(torch.randn(batch, 2, 3, 3), 10)
        label = net.seen[-1]
        assert label.dtype == torch.long and label.shape == (batch,) and bool((label == 7).all())
    with pytest.raises(ValueError, match="one integer class"):
        from_network(net, ABAR, class_label=torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="class_label"):
        from_network(net, ABAR, class_label=1.5)
    with pytest.raises(ValueError, match="label_kwarg"):
        from_network(net, ABAR, class_label=1, label_kwarg="not a name")


def test_raw_network_conventions():
    # timestep t - 1 by default, timestep_fn otherwise; eval mode; dtype and device follow
    seen = []

    def net(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    den = from_network(net, ABAR, "eps")
    den.denoise(torch.zeros(2, 3), 17)
    assert seen[-1].tolist() == [16, 16]
    den = from_network(net, ABAR, timestep_fn=lambda t: 2 * t)
    den.denoise(torch.zeros(2, 3), 17)
    assert seen[-1].tolist() == [34, 34]

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5))

        def forward(self, x, t):
            return self.body(x)

    model = Flat().double()
    den = from_network(model, ABAR, "sample")
    assert not model.training  # dropout off: the denoiser is deterministic
    x = torch.randn(6, 4)
    x0, eps = den.denoise(x, 100)
    assert x0.dtype == torch.float32 and not x0.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(x0, model(x.double(), None).float())
    torch.testing.assert_close(den.denoise(x, 100)[0], x0, rtol=0, atol=0)

    # a flat input reshaped for an image network (input_shape), the output flattened back
    conv = Toy()
    flat = from_network(conv, ABAR, input_shape=(2, 3, 3))
    image = from_network(conv, ABAR)
    xi = torch.randn(4, 2, 3, 3)
    torch.testing.assert_close(flat.denoise(xi.reshape(4, 18), 50)[0], image.denoise(xi, 50)[0].reshape(4, 18))

    with pytest.raises(ValueError, match=r"returned shape \(2, 2\) for an input of shape \(2, 3\)"):
        from_network(lambda x, t: x[:, :2], ABAR).denoise(torch.zeros(2, 3), 5)
    with pytest.raises(TypeError, match="expected a tensor"):
        from_network(lambda x, t: "image", ABAR).denoise(torch.zeros(2, 3), 5)
    with pytest.raises(TypeError, match="callable"):
        NetworkAdapter(3)
    with pytest.raises(ValueError, match="prediction_type"):
        from_network(net, ABAR, "score")
    assert "NetworkAdapter(Toy" in repr(image.model)


# --------------------------------------------------------------------------------------------
# Data ranges
# --------------------------------------------------------------------------------------------


def test_range_conversions_round_trip():
    x = torch.rand(5, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    assert torch.equal(to_model_range(x, "[0,1]"), 2 * x - 1)
    assert to_model_range(torch.tensor([0.0, 1.0]), "[0, 1]").tolist() == [-1.0, 1.0]
    for data_range in ("[0,1]", (0, 255), (-3.0, 5.0)):
        lo, hi = parse_data_range(data_range)
        xr = lo + (hi - lo) * x
        xm = to_model_range(xr, data_range)
        assert xm.min() >= -1 - 1e-12 and xm.max() <= 1 + 1e-12
        torch.testing.assert_close(from_model_range(xm, data_range), xr, rtol=1e-14, atol=1e-12)
        torch.testing.assert_close(to_model_range(from_model_range(x, data_range), data_range), x, rtol=1e-14, atol=1e-12)
    assert to_model_range(x, "[-1,1]") is x and from_model_range(x, "[-1, 1]") is x
    den = from_network(lambda x, t: x, ABAR, data_range="[0,1]")
    assert den.data_range == (0.0, 1.0) and torch.equal(from_model_range(x, den), (x + 1) / 2)
    for bad in ("[0,2]", (1, 1), (0, float("inf")), 3, "0-1"):
        with pytest.raises(ValueError, match="data_range"):
            parse_data_range(bad)


@pytest.mark.parametrize("data_range", ["[0,1]", (0, 255), "[-1,1]", (-2, 2)])
def test_observation_to_model_range(data_range):
    g = torch.Generator().manual_seed(8)
    op = DenseOperator(torch.randn(5, 7, dtype=torch.float64, generator=g))
    lo, hi = parse_data_range(data_range)
    x_user = lo + (hi - lo) * torch.rand(3, 7, dtype=torch.float64, generator=g)
    x_model = to_model_range(x_user, data_range)
    z = torch.randn(3, 5, dtype=torch.float64, generator=g)
    sigma = 0.3
    y = op.A(x_user) + sigma * z

    y_model, sigma_model = observation_to_model_range(op, y, sigma, data_range)
    assert y_model.shape == y.shape and isinstance(sigma_model, float)
    torch.testing.assert_close(y_model, op.A(x_model) + sigma_model * z, rtol=1e-12, atol=1e-12)
    if data_range == "[0,1]":
        assert sigma_model == 2 * sigma
        torch.testing.assert_close(y_model, 2 * y - op.A(torch.ones(1, 7, dtype=torch.float64)), rtol=0, atol=1e-15)
    # one observation of shape y_shape keeps that shape
    y1, s1 = observation_to_model_range(op, y[0], sigma, data_range)
    assert y1.shape == (5,) and s1 == sigma_model
    torch.testing.assert_close(y1, y_model[0], rtol=0, atol=0)

    with pytest.raises(ValueError, match="y: expected shape"):
        observation_to_model_range(op, torch.zeros(3, 4), sigma, data_range)
    with pytest.raises(ValueError, match="sigma_y"):
        observation_to_model_range(op, y, -1.0, data_range)


# --------------------------------------------------------------------------------------------
# End to end: a diffusers network, [0, 1] data, flat operators, two samplers
# --------------------------------------------------------------------------------------------


def test_samplers_run_on_adapted_network(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    path = save(tmp_path / "model", tiny_unet(), diffusers.DDPMScheduler(num_train_timesteps=1000), "bare")
    den = from_diffusers(path, data_range="[0,1]")
    g = torch.Generator().manual_seed(9)
    d = 3 * 8 * 8
    keep = torch.randperm(d, generator=g)[:40]
    op = DenseOperator(torch.eye(d, dtype=torch.float64)[keep])  # observe 40 of 192 pixels
    x_true = torch.rand(1, d, dtype=torch.float64, generator=g)
    y = op.A(x_true)[0] + 0.05 * torch.randn(40, dtype=torch.float64, generator=g)
    y_model, sigma_model = observation_to_model_range(op, y, 0.05, den)

    for sampler in (fkdiff.MCGDiff(num_particles=8, num_steps=4), fkdiff.DPS(num_steps=4)):
        result = sampler(den, op, y_model, sigma_model, num_samples=2, progress=False,
                         generator=torch.Generator().manual_seed(0))
        samples = from_model_range(result.samples, den)
        assert samples.shape == (2, d) and torch.isfinite(samples).all()
        assert not result.samples.requires_grad
        assert math.isfinite(result.nfe) and result.nfe > 0
