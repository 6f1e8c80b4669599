"""Gradient reversal (Ganin & Lempitsky, 2015): identity forward, ``-alpha * grad`` backward.

NBDetach puts one of these between the identity feature and each non-biometric projection: the projection learns
to predict the perspective's text feature (descending the loss) while the backbone receives the reversed gradient
(ascending it), so the identity feature is pushed to carry no information about clothing, hairstyle, ...
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GradReverse(torch.autograd.Function):
    """``y = x``; ``dL/dx = -alpha * dL/dy``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.alpha = float(alpha)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad_output.neg() * ctx.alpha, None


def grad_reverse(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Apply gradient reversal with coefficient ``alpha`` (``alpha = 0`` blocks the gradient)."""
    return GradReverse.apply(x, alpha)


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; ``alpha`` is a plain attribute (set it from a schedule)."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def grl_alpha(base: float, schedule: str, progress: float) -> float:
    """The GRL coefficient at training ``progress`` in [0, 1].

    ``constant``: ``base``. ``dann``: ``base * (2 / (1 + exp(-10 p)) - 1)`` (0 at the start, ``base`` at the end).
    """
    if schedule == "constant":
        return float(base)
    if schedule == "dann":
        p = min(max(float(progress), 0.0), 1.0)
        return float(base) * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)
    raise ValueError(f"unknown GRL schedule {schedule!r}; allowed: constant, dann")
