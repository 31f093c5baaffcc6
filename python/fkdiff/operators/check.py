"""Numerical checks of the SVD protocol (for users' own operators, and our tests)."""

from __future__ import annotations

import torch

from .base import LinearOperator


def check_svd(op: LinearOperator, *, batch: int = 3, atol: float = 1e-8, s_min: float = 1e-6,
              generator: torch.Generator | None = None) -> dict:
    """Verify on random float64 inputs that ``V`` and ``U`` are orthogonal (inverse rotations that
    keep norms), that ``A = U S V^T``, that ``At`` is the adjoint of ``A``, and that the singular
    values are positive and non-increasing.

    ``A`` may be the exact operator while ``U S V^T`` keeps only the singular values above the
    relative cut ``s_min`` (the protocol's default 1e-6): the ``A = U S V^T`` check allows the
    part cut away, at most ``s_min * max s * |x|`` per row.

    Returns the worst error of each check; raises ``AssertionError`` naming the first check that
    exceeds ``atol`` (relative to the inputs' scale).
    """
    gen = generator or torch.Generator().manual_seed(0)
    x = torch.randn(batch, *op.x_shape, generator=gen, dtype=torch.float64)
    y = torch.randn(batch, *op.y_shape, generator=gen, dtype=torch.float64)
    s = op.singular_values.to(torch.float64).cpu()
    flat = lambda z: z.reshape(z.shape[0], -1)  # noqa: E731
    xbar, ybar = op.Vt(x), op.Ut(y)
    errors = {
        "V_inverse": (flat(op.V(xbar)) - flat(x)).abs().max().item(),
        "V_norm": (xbar.norm(dim=1) - flat(x).norm(dim=1)).abs().max().item(),
        "U_inverse": (flat(op.U(ybar)) - flat(y)).abs().max().item(),
        "U_norm": (ybar.norm(dim=1) - flat(y).norm(dim=1)).abs().max().item(),
        "A_is_USVt": (flat(op.A(x)) - flat(op.U(op._scaled(xbar, op.dim_y)))).abs().max().item(),
        "adjoint": ((flat(op.A(x)) * flat(y)).sum(1) - (flat(x) * flat(op.At(y))).sum(1)).abs().max().item(),
        "singular_values": float(max(0.0, -float(s.min()) if s.numel() else 0.0, float((s[1:] - s[:-1]).clamp(min=0).max()) if s.numel() > 1 else 0.0)),
    }
    scale = 1.0 + float(s.max()) if s.numel() else 1.0
    cut = float(s_min) * (float(s.max()) if s.numel() else 0.0) * float(flat(x).norm(dim=1).max())
    for name, err in errors.items():
        tol = atol * scale * max(op.dim_x, op.dim_y) ** 0.5 + (cut if name == "A_is_USVt" else 0.0)
        assert err <= tol, f"check_svd: {name} error {err:.3e} exceeds {tol:.3e}"
    return errors
