"""An exponential moving average of a model's weights and batch-norm statistics (``recipe.ema``).

``torch.optim.swa_utils.AveragedModel`` has no warm-up, so its average starts as mostly the random
initial weights, and it reads its step count from the device every step (a host sync on a GPU).
This one warms the decay up as ``min(decay, (1 + n) / (10 + n))`` and counts steps on the host.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightEMA:
    """``module`` is the averaged copy that is evaluated and saved; ``update(model)`` after every step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        weight = 1 - min(self.decay, (1 + self.steps) / (10 + self.steps))
        pairs = zip(_tensors(self.module), _tensors(model), strict=True)
        floats: list[tuple[torch.Tensor, torch.Tensor]] = []
        other: list[tuple[torch.Tensor, torch.Tensor]] = []
        for mine, theirs in pairs:
            (floats if mine.is_floating_point() else other).append((mine, theirs))
        if floats:
            torch._foreach_lerp_([m for m, _ in floats], [t.detach() for _, t in floats], weight)
        for mine, theirs in other:  # counters such as num_batches_tracked are copied
            mine.copy_(theirs)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])


def _tensors(model: nn.Module) -> list[torch.Tensor]:
    """Parameters then buffers, each tensor once (a weight tied to two layers must not be averaged twice)."""
    return [*(p.detach() for p in model.parameters()), *model.buffers()]
