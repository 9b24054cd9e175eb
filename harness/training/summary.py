"""``bench summary``: the seeds' layer table plus the receptive field after each layer.

Receptive field follows the usual recurrence along the order layers run in:
``rf += (dilation * (k - 1)) * jump`` and ``jump *= stride``. For residual networks
that order is the longest path, which is the one that sets the receptive field.
Global pooling makes the field the whole input.
"""

from __future__ import annotations

from typing import Any

import torch
from tabulate import tabulate
from torch import nn

from cnnbench.registry import Registry


def _pair(v: Any) -> int:
    return v[0] if isinstance(v, tuple) else v


def layer_table(model: nn.Module, input_shape: tuple[int, int, int]) -> list[dict[str, Any]]:
    """One row per leaf module call: name, type, output shape, parameters, receptive field, jump."""
    rows: list[dict[str, Any]] = []
    state = {"rf": 1, "jump": 1, "size": input_shape[1]}

    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        rf, jump = state["rf"], state["jump"]
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, d = _pair(module.kernel_size), _pair(module.stride), _pair(getattr(module, "dilation", 1))
            rf, jump = rf + d * (k - 1) * jump, jump * s
        elif isinstance(module, nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d):
            rf = max(rf, state["size"])
        state.update(rf=rf, jump=jump)
        rows.append(
            {
                "layer": f"{type(module).__name__}-{len(rows) + 1}",
                "name": names[module],
                "output": list(output.shape[1:]),
                "params": sum(p.numel() for p in module.parameters(recurse=False)),
                "rf": rf,
                "jump": jump,
            }
        )

    names = {m: n for n, m in model.named_modules()}
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return rows


def render_summary(registry: Registry, model_name: str, normalizer: str | None = None) -> str:
    spec = registry.model(model_name)
    dataset = registry.dataset(spec.dataset)
    model = registry.create_model(model_name, normalizer)
    rows = layer_table(model, dataset.image_shape)
    table = tabulate(
        [[r["layer"], str([-1, *r["output"]]), f"{r['params']:,}", r["rf"]] for r in rows],
        headers=["Layer (type)", "Output Shape", "Param #", "RF"],
        colalign=("left", "right", "right", "right"),
    )
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (
        f"{spec.name}: {spec.description}\nsource: {spec.source}; normalizer: {normalizer or spec.normalizer}\n\n"
        f"{table}\n\nTotal params: {total:,}\nTrainable params: {trainable:,}\n"
        f"Documented params: {spec.params:,}\nFinal receptive field: {rows[-1]['rf']} px "
        f"(input {dataset.image_shape[1]} x {dataset.image_shape[2]})"
    )
