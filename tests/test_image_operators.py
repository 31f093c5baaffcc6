"""The image operators in the SVD protocol: inpainting/outpainting/denoising, average-pool and
bicubic super-resolution, separable (zero-padded) and circular deblurring, colorization.

Every case is checked against the protocol (``check_svd``), against a dense matrix built by
applying ``A`` to the identity basis, against an independent reference of ``A`` (masking, block
means, ``F.interpolate``, ``conv2d``, channel mean), for batching, float32 and input validation.
Small images only (odd sizes included); one speed sanity check at 3 x 256 x 256.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fkdiff.operators import (
    BicubicSuperResolution,
    CircularDeblurring,
    Colorization,
    Deblurring,
    Denoising,
    Inpainting,
    Outpainting,
    SuperResolution,
    box_inpainting,
    check_svd,
    gaussian_blur,
    half_inpainting,
    random_inpainting,
    uniform_blur,
)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=gen(seed), dtype=F64).to(dtype)


# ------------------------------------------------------------------------------ independent references


def _gauss1d(sigma, size):
    t = np.arange(size) - (size - 1) / 2
    k = np.exp(-(t**2) / (2 * sigma**2))
    return torch.tensor(k / k.sum())


def _conv_zero(x, k2d):
    """True convolution, centre k // 2, zero padding, same size (conv2d is a correlation)."""
    B, C, H, W = x.shape
    kh, kw = k2d.shape
    xp = F.pad(x.reshape(B * C, 1, H, W), (kw - 1 - kw // 2, kw // 2, kh - 1 - kh // 2, kh // 2))
    return F.conv2d(xp, k2d.flip(0, 1)[None, None].to(x.dtype)).reshape(B, C, H, W)


def _conv_circular(x, k2d):
    B, C, H, W = x.shape
    kh, kw = k2d.shape
    xp = F.pad(x.reshape(B * C, 1, H, W), (kw - 1 - kw // 2, kw // 2, kh - 1 - kh // 2, kh // 2), mode="circular")
    return F.conv2d(xp, k2d.flip(0, 1)[None, None].to(x.dtype)).reshape(B, C, H, W)


def _bicubic_reference(x, r):
    """torch's antialiased bicubic on the half-sample-symmetric padded image, cropped."""
    P = 3 * r
    xp = torch.from_numpy(np.pad(x.numpy(), ((0, 0), (0, 0), (P, P), (P, P)), mode="symmetric"))
    y = F.interpolate(xp, scale_factor=1 / r, mode="bicubic", antialias=True, align_corners=False)
    h, w = x.shape[2] // r, x.shape[3] // r
    return y[..., P // r : P // r + h, P // r : P // r + w]


def _block_mean(x, r):
    B, C, H, W = x.shape
    return x.reshape(B, C, H // r, r, W // r, r).mean(dim=(3, 5))


MASK_257 = torch.rand(2, 5, 7, generator=gen(3)) < 0.5
KERNEL_CIRC = torch.rand(3, 4, generator=gen(4), dtype=F64)
KERNEL_CIRC_ODD = torch.rand(5, 3, generator=gen(5), dtype=F64)
KH, KW = torch.tensor([1.0, 2.0, 3.0, 1.0], dtype=F64), torch.tensor([0.5, 1.0, 0.25], dtype=F64)


def _box_mask(H, W, h, w):
    m = torch.ones(H, W, dtype=torch.bool)
    m[(H - h) // 2 : (H - h) // 2 + h, (W - w) // 2 : (W - w) // 2 + w] = False
    return m


# name -> (factory(s_min or None), reference A(x))
CASES = {
    "box-3x8x8": (lambda s: box_inpainting((3, 8, 8)), lambda x: x * _box_mask(8, 8, 4, 4)),
    "box-size-1x5x7": (lambda s: box_inpainting((1, 5, 7), box_size=(2, 3)), lambda x: x * _box_mask(5, 7, 2, 3)),
    "random-1x5x7": (lambda s: random_inpainting((1, 5, 7), 0.4, seed=1), None),
    "half-right-3x6x9": (lambda s: half_inpainting((3, 6, 9), "right"), lambda x: x * (torch.arange(9) >= 4)),
    "mask-per-channel-2x5x7": (lambda s: Inpainting(MASK_257, (2, 5, 7)), lambda x: x * MASK_257),
    "outpainting-3x6x9": (lambda s: Outpainting((3, 6, 9)), lambda x: x * ~_box_mask(6, 9, 3, 4)),
    "denoising-1x5x7": (lambda s: Denoising((1, 5, 7)), lambda x: x),
    "sr2-3x8x8": (lambda s: SuperResolution(2, (3, 8, 8)), lambda x: _block_mean(x, 2)),
    "sr3-3x6x9": (lambda s: SuperResolution(3, (3, 6, 9)), lambda x: _block_mean(x, 3)),
    "sr1-1x5x7": (lambda s: SuperResolution(1, (1, 5, 7)), lambda x: x),
    "bicubic2-3x8x8": (lambda s: BicubicSuperResolution(2, (3, 8, 8), **s), lambda x: _bicubic_reference(x, 2)),
    "bicubic3-1x6x9": (lambda s: BicubicSuperResolution(3, (1, 6, 9), **s), lambda x: _bicubic_reference(x, 3)),
    "bicubic2-2x6x10": (lambda s: BicubicSuperResolution(2, (2, 6, 10), **s), lambda x: _bicubic_reference(x, 2)),
    "gauss-3x8x8": (lambda s: gaussian_blur(1.0, 5, (3, 8, 8), **s), lambda x: _conv_zero(x, torch.outer(_gauss1d(1.0, 5), _gauss1d(1.0, 5)))),
    "uniform4-1x5x7": (lambda s: uniform_blur(4, (1, 5, 7), **s), lambda x: _conv_zero(x, torch.full((4, 4), 1 / 16, dtype=F64))),
    "separable-hw-3x6x9": (lambda s: Deblurring(KH, (3, 6, 9), KW, **s), lambda x: _conv_zero(x, torch.outer(KH / KH.sum(), KW / KW.sum()))),
    "circular-3x6x9": (lambda s: CircularDeblurring(KERNEL_CIRC, (3, 6, 9), **s), lambda x: _conv_circular(x, KERNEL_CIRC / KERNEL_CIRC.sum())),
    "circular-2x5x7": (lambda s: CircularDeblurring(KERNEL_CIRC_ODD, (2, 5, 7), **s), lambda x: _conv_circular(x, KERNEL_CIRC_ODD / KERNEL_CIRC_ODD.sum())),
    "circular-gauss-1x8x8": (
        lambda s: gaussian_blur(1.5, 5, (1, 8, 8), boundary="circular", **s),
        lambda x: _conv_circular(x, torch.outer(_gauss1d(1.5, 5), _gauss1d(1.5, 5))),
    ),
    # sigma 1.5 on 9 x 11: some singular values fall below the default cut (rank < D)
    "gauss-cut-2x9x11": (lambda s: gaussian_blur(1.5, 9, (2, 9, 11), **s), lambda x: _conv_zero(x, torch.outer(_gauss1d(1.5, 9), _gauss1d(1.5, 9)))),
    "circular-gauss-cut-2x9x11": (
        lambda s: gaussian_blur(1.5, 9, (2, 9, 11), boundary="circular", **s),
        lambda x: _conv_circular(x, torch.outer(_gauss1d(1.5, 9), _gauss1d(1.5, 9))),
    ),
    "colorization-3x6x9": (lambda s: Colorization((3, 6, 9)), lambda x: x.mean(dim=1, keepdim=True)),
    "colorization-3x5x7": (lambda s: Colorization((3, 5, 7)), lambda x: x.mean(dim=1, keepdim=True)),
}
CUT = {"bicubic", "gauss", "uniform", "separable", "circular"}  # families with an s_min argument


def make(name: str, s_min: float | None = None):
    factory, _ = CASES[name]
    has_cut = name.split("-")[0].rstrip("0123456789") in CUT
    return factory({"s_min": s_min} if (has_cut and s_min is not None) else {})


def dense(fn, in_shape) -> torch.Tensor:
    """``(out, in)`` matrix of the linear map ``fn`` on batches ``(batch, *in_shape)``."""
    n = math.prod(in_shape)
    E = torch.eye(n, dtype=F64).view(n, *in_shape)
    return fn(E).reshape(n, -1).T


NAMES = list(CASES)


# ------------------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("name", NAMES)
def test_check_svd(name):
    # the truncated SVD agrees with the exact A only up to s_min * max s: check with a tiny cut
    op = make(name, s_min=1e-12)
    errors = check_svd(op, batch=3, generator=gen(1))
    assert max(errors.values()) < 1e-10


@pytest.mark.parametrize("name", NAMES)
def test_adjoint(name):
    op = make(name)
    x, y = randn(4, *op.x_shape, seed=2), randn(4, *op.y_shape, seed=3)
    lhs = (op.A(x) * y).sum(dim=(1, 2, 3))
    rhs = (x * op.At(y)).sum(dim=(1, 2, 3))
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_autograd_vjp_is_At(name):
    op = make(name)
    x = randn(2, *op.x_shape, seed=4).requires_grad_(True)
    y = randn(2, *op.y_shape, seed=5)
    (g,) = torch.autograd.grad((op.A(x) * y).sum(), x)
    torch.testing.assert_close(g, op.At(y), rtol=1e-12, atol=1e-12)
    xbar = randn(2, op.dim_x, seed=6).requires_grad_(True)
    (g,) = torch.autograd.grad((op.V(xbar) * x.detach()).sum(), xbar)
    torch.testing.assert_close(g, op.Vt(x.detach()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_dense_matrix_and_singular_values(name):
    op = make(name)
    M = dense(op.A, op.x_shape)
    assert M.shape == (op.dim_y, op.dim_x)
    torch.testing.assert_close(dense(op.At, op.y_shape), M.T, rtol=0, atol=1e-13)
    s = torch.linalg.svdvals(M)
    s = s[s > op.s_min * s[0]]
    sv = op.singular_values
    assert sv.dtype == F64 and sv.shape == (op.rank,)
    assert bool((sv[1:] <= sv[:-1]).all()) and bool((sv > op.s_min * sv[0]).all())
    torch.testing.assert_close(sv, s, rtol=1e-9, atol=1e-12)
    # U S V^T (truncated at the cut) is within s_min * max s of the exact A
    USVt = dense(lambda x: op.U(op._scaled(op.Vt(x), op.dim_y)), op.x_shape)
    assert float(torch.linalg.matrix_norm(USVt - M, ord=2)) <= op.s_min * float(sv[0]) * (1 + 1e-6) + 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_A_equals_independent_reference(name):
    op = make(name)
    reference = CASES[name][1]
    if reference is None:  # random mask: checked against its own mask
        reference = lambda x: x * op.mask  # noqa: E731
    x = randn(3, *op.x_shape, seed=7)
    torch.testing.assert_close(op.A(x), reference(x).to(F64), rtol=1e-12, atol=1e-12)
    assert op(x).shape == (3, *op.y_shape)


@pytest.mark.parametrize("name", NAMES)
def test_batching(name):
    op = make(name)
    x, y = randn(5, *op.x_shape, seed=8), randn(5, *op.y_shape, seed=9)
    xbar, ybar = randn(5, op.dim_x, seed=10), randn(5, op.dim_y, seed=11)
    for fn, inp in [(op.Vt, x), (op.V, xbar), (op.Ut, y), (op.U, ybar), (op.A, x), (op.At, y)]:
        whole = fn(inp)
        parts = torch.cat([fn(inp[i : i + 1]) for i in range(5)])
        torch.testing.assert_close(whole, parts, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_float32(name):
    op = make(name)
    x, y = randn(3, *op.x_shape, seed=12), randn(3, *op.y_shape, seed=13)
    xbar, ybar = randn(3, op.dim_x, seed=14), randn(3, op.dim_y, seed=15)
    for fn, inp in [(op.Vt, x), (op.V, xbar), (op.Ut, y), (op.U, ybar), (op.A, x), (op.At, y)]:
        out64, out32 = fn(inp), fn(inp.float())
        assert out32.dtype == torch.float32 and out64.dtype == F64
        torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)
    assert float((op.V(op.Vt(x.float())) - x.float()).abs().max()) < 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_dtype_errors(name):
    op = make(name)
    C, H, W = op.x_shape
    bad_x = torch.zeros(2, C, H + 1, W, dtype=F64)
    bad_y = torch.zeros(2, *op.y_shape[:-1], op.y_shape[-1] + 1, dtype=F64)
    for fn, bad, label in [(op.Vt, bad_x, "x"), (op.A, bad_x, "x"), (op.Ut, bad_y, "y"), (op.At, bad_y, "y")]:
        with pytest.raises(ValueError, match=f"^{label}: expected shape"):
            fn(bad)
    with pytest.raises(ValueError, match="x: expected shape"):
        op.A(torch.zeros(C, H, W, dtype=F64))  # no batch axis
    with pytest.raises(ValueError, match="xbar: expected shape"):
        op.V(torch.zeros(2, op.dim_x + 1, dtype=F64))
    with pytest.raises(ValueError, match="ybar: expected shape"):
        op.U(torch.zeros(2, *op.y_shape, dtype=F64))
    with pytest.raises(TypeError, match="x: expected a floating tensor"):
        op.A(torch.zeros(2, C, H, W, dtype=torch.long))


# ------------------------------------------------------------------------------- per operator


def test_inpainting_permutation_and_mask():
    op = half_inpainting((2, 3, 5), "left")
    assert op.rank == 2 * 3 * 3 and torch.equal(op.singular_values, torch.ones(18, dtype=F64))
    x = randn(1, 2, 3, 5, seed=16)
    xbar = op.Vt(x)
    torch.testing.assert_close(xbar[0, : op.rank], x[0][:, :, :3].reshape(-1), rtol=0, atol=0)
    torch.testing.assert_close(xbar[0, op.rank :], x[0][:, :, 3:].reshape(-1), rtol=0, atol=0)
    assert op.A(x)[..., 3:].abs().max() == 0


def test_inpainting_presets():
    box = box_inpainting((1, 10, 12))  # default fraction 0.5: a 5 x 6 hidden box
    assert box.rank == 120 - 30 and not box.mask[0, 2:7, 3:9].any() and box.mask[0].sum() == 90
    assert box_inpainting((1, 10, 12), fraction=(0.2, 0.5)).rank == 120 - 2 * 6
    out = Outpainting((3, 10, 12), box_size=4)
    assert torch.equal(out.mask, ~box_inpainting((3, 10, 12), box_size=4).mask)
    r1, r2 = random_inpainting((3, 9, 11), 0.3, seed=7), random_inpainting((3, 9, 11), 0.3, seed=7)
    assert torch.equal(r1.mask, r2.mask) and r1.rank == 3 * round(0.3 * 99)
    assert torch.equal(r1.mask[0], r1.mask[1]) and torch.equal(r1.mask[0], r1.mask[2])  # whole pixels
    assert not torch.equal(r1.mask, random_inpainting((3, 9, 11), 0.3, seed=8).mask)
    r3 = Inpainting.random((3, 9, 11), 0.3, generator=gen(7))
    assert torch.equal(r3.mask, r1.mask)
    halves = {"left": (slice(None), slice(0, 4)), "right": (slice(None), slice(3, 7)), "top": (slice(0, 3), slice(None)), "bottom": (slice(2, 5), slice(None))}
    for side, sl in halves.items():  # 5 x 7: the observed half is the larger one
        m = Inpainting.half((1, 5, 7), side).mask[0]
        assert m[sl].all() and m.sum() == m[sl].numel()
    assert torch.equal(Inpainting.box((1, 6, 6), box_size=2).mask, box_inpainting((1, 6, 6), box_size=2).mask)
    assert torch.equal(Inpainting(torch.ones(1, 4, 4)).mask, torch.ones(1, 4, 4, dtype=torch.bool))  # x_shape from a 3-D mask


def test_superres_basis_first_vector_is_block_average():
    op = SuperResolution(2, (1, 4, 6))
    x = randn(2, 1, 4, 6, seed=17)
    torch.testing.assert_close(op.Vt(x)[:, : op.rank], 2 * _block_mean(x, 2).reshape(2, -1))
    assert torch.allclose(op.singular_values, torch.full((6,), 0.5, dtype=F64))


def test_bicubic_matrix_rows():
    from fkdiff.operators.superres import bicubic_matrix

    M = bicubic_matrix(16, 2)
    torch.testing.assert_close(M.sum(1), torch.ones(8, dtype=F64))
    torch.testing.assert_close(bicubic_matrix(7, 1), torch.eye(7, dtype=F64))
    # interior row: the Keys (a = -0.5) kernel stretched by 2 at offsets +-0.5, +-1.5, ... +-3.5
    t = (torch.arange(8, dtype=F64) - 3.5).abs() / 2
    k = torch.where(t <= 1, 1.5 * t**3 - 2.5 * t**2 + 1, -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2)
    torch.testing.assert_close(M[4, 5:13], k / k.sum())


def test_blur_cut_and_two_d_separable_kernel():
    op = gaussian_blur(2.0, None, (2, 16, 16))  # size 13; many small singular values
    assert 0 < op.rank < op.dim_x
    sv = op.singular_values
    assert float(sv[-1]) > 1e-6 * float(sv[0])
    k2d = torch.outer(KH, KW)
    a, b = Deblurring(k2d, (3, 6, 9)), Deblurring(KH, (3, 6, 9), KW)
    x = randn(2, 3, 6, 9, seed=18)
    torch.testing.assert_close(a.A(x), b.A(x))
    torch.testing.assert_close(a.singular_values, b.singular_values)


def test_circular_singular_values_are_kernel_spectrum():
    k = KERNEL_CIRC / KERNEL_CIRC.sum()
    op = CircularDeblurring(KERNEL_CIRC, (2, 6, 8), s_min=0.0)
    spec = np.abs(np.fft.fft2(np.pad(k.numpy(), ((0, 3), (0, 4)))))  # |K| does not depend on the shift
    expected = torch.tensor(np.sort(np.tile(spec.ravel(), 2))[::-1].copy())
    torch.testing.assert_close(op.singular_values, expected[expected > 0])
    # the largest is the DC mode, 1 for a normalised non-negative kernel; its V vector is constant
    assert abs(float(op.singular_values[0]) - 1) < 1e-12
    # (ties keep channel-major order: coordinate 0 is channel 0's DC)
    dc = op.V(torch.eye(op.dim_x, dtype=F64)[:1])
    expected = torch.zeros(1, 2, 6, 8, dtype=F64)
    expected[0, 0] = 1 / math.sqrt(48)
    torch.testing.assert_close(dc, expected)


def test_colorization_basis():
    op = Colorization((3, 2, 3))
    assert torch.allclose(op.singular_values, torch.full((6,), 3**-0.5, dtype=F64))
    x = randn(2, 3, 2, 3, seed=19)
    torch.testing.assert_close(op.Vt(x)[:, :6], x.sum(1).reshape(2, -1) / math.sqrt(3))


# --------------------------------------------------------------------------------- validation


def test_mask_validation():
    with pytest.raises(ValueError, match="mask: expected shape"):
        Inpainting(torch.ones(5, 5), (3, 4, 5))
    with pytest.raises(ValueError, match="mask: expected shape"):
        Inpainting(torch.ones(2, 4, 5), (3, 4, 5))
    with pytest.raises(ValueError, match="mask: observes nothing"):
        Inpainting(torch.zeros(4, 5), (3, 4, 5))
    with pytest.raises(ValueError, match="mask: values must be bool or 0/1"):
        Inpainting(torch.full((4, 5), 0.5), (3, 4, 5))
    with pytest.raises(ValueError, match="mask: values must be bool or 0/1"):
        Inpainting(torch.tensor([[1.0, float("nan")]]), (1, 1, 2))
    with pytest.raises(ValueError, match="mask: observes nothing"):
        box_inpainting((1, 4, 4), box_size=4)
    with pytest.raises(ValueError, match="box_size"):
        box_inpainting((1, 4, 4), box_size=5)
    with pytest.raises(ValueError, match="box_size, fraction"):
        box_inpainting((1, 4, 4), box_size=2, fraction=0.5)
    with pytest.raises(ValueError, match="fraction"):
        Outpainting((1, 4, 4), fraction=1.5)
    with pytest.raises(ValueError, match="keep"):
        random_inpainting((1, 4, 4), 0.0)
    with pytest.raises(ValueError, match="side"):
        half_inpainting((1, 4, 4), "middle")
    with pytest.raises(ValueError, match="x_shape"):
        Denoising((4, 4))
    with pytest.raises(ValueError, match="x_shape"):
        Denoising((1, 0, 4))


def test_superres_validation():
    with pytest.raises(ValueError, match="factor: 2 must divide"):
        SuperResolution(2, (3, 6, 9))
    with pytest.raises(ValueError, match="factor: 4 must divide"):
        BicubicSuperResolution(4, (1, 8, 10))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="factor: expected a positive int"):
            SuperResolution(bad, (1, 4, 4))


def test_kernel_validation():
    x_shape = (1, 6, 6)
    with pytest.raises(ValueError, match="kernel: expected a 1-D or 2-D kernel"):
        Deblurring(torch.ones(2, 2, 2), x_shape)
    with pytest.raises(ValueError, match="kernel: expected a 2-D kernel"):
        CircularDeblurring(torch.ones(3), x_shape)
    with pytest.raises(ValueError, match="kernel: contains NaN or inf"):
        Deblurring(torch.tensor([1.0, float("nan")]), x_shape)
    with pytest.raises(ValueError, match="kernel: entries must be non-negative"):
        CircularDeblurring(torch.tensor([[1.0, -0.5]]), x_shape)
    with pytest.raises(ValueError, match="kernel: must have a positive sum"):
        Deblurring(torch.zeros(3), x_shape)
    with pytest.raises(ValueError, match="kernel: is empty"):
        Deblurring(torch.ones(0), x_shape)
    with pytest.raises(ValueError, match="kernel: height 7 exceeds"):
        Deblurring(torch.ones(7), x_shape)
    with pytest.raises(ValueError, match="kernel: width 7 exceeds"):
        Deblurring(torch.ones(3), x_shape, torch.ones(7))
    with pytest.raises(ValueError, match=r"kernel: size \(3, 7\) exceeds"):
        CircularDeblurring(torch.ones(3, 7), x_shape)
    with pytest.raises(ValueError, match="kernel: the 2-D kernel is not separable"):
        Deblurring(torch.eye(3), x_shape)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(0.0, 3, x_shape)
    with pytest.raises(ValueError, match="kernel: height 13 exceeds"):
        gaussian_blur(2.0, None, x_shape)
    with pytest.raises(ValueError, match="size"):
        uniform_blur(0, x_shape)
    with pytest.raises(ValueError, match="boundary"):
        uniform_blur(3, x_shape, boundary="reflect")
    with pytest.raises(ValueError, match="s_min"):
        uniform_blur(3, x_shape, s_min=-1.0)
    with pytest.raises(ValueError, match="x_shape: colorization needs 3 channels"):
        Colorization((1, 4, 4))


# ------------------------------------------------------------------------------------- speed


def test_large_images_are_matrix_free():
    """3 x 256 x 256 (D = 196608; a D x D matrix would need 300 GB): construct and apply."""
    shape = (3, 256, 256)
    factories = [
        lambda: box_inpainting(shape),
        lambda: random_inpainting(shape, 0.2),
        lambda: Denoising(shape),
        lambda: SuperResolution(4, shape),
        lambda: BicubicSuperResolution(4, shape),
        lambda: gaussian_blur(3.0, None, shape),
        lambda: gaussian_blur(3.0, None, shape, boundary="circular"),
        lambda: Colorization(shape),
    ]
    x = randn(2, *shape, seed=20, dtype=torch.float32)
    for factory in factories:
        start = time.perf_counter()
        op = factory()
        y = op.A(x)
        xbar = op.Vt(x)
        back = op.V(xbar)
        ybar = op.Ut(y)
        op.U(ybar)
        op.At(y)
        elapsed = time.perf_counter() - start
        assert elapsed < 2.0, f"{type(op).__name__}: {elapsed:.2f} s"
        assert float((back - x).abs().max()) < 1e-4
