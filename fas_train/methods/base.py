"""What every method shares: a guard against non-finite losses (checked before the optimiser step)."""
from __future__ import annotations

import math


class NonFiniteLoss(FloatingPointError):
    """A loss became NaN or Inf; the step was not applied."""

    def __init__(self, losses: dict):
        self.losses = losses
        super().__init__(f"non-finite loss: {losses}")


def check_finite(losses: dict) -> dict:
    """The losses as floats; raises NonFiniteLoss if any is NaN or Inf."""
    values = {k: float(v.detach()) if hasattr(v, "detach") else float(v) for k, v in losses.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise NonFiniteLoss(values)
    return values
