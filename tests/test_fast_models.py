"""cnnbench's fast models: parameter counts and multiply-adds by hand, shapes, and what the stride-2
variant changes (its first layer runs at 13x13 with no pool, everything after it is mnist_fast's)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

WIDTHS = (10, 14, 16, 16, 14)


def mnist_fast_params() -> int:
    """3x3 bias-free convs 1-10-14-16-16-14, a batch norm (2 per channel) after each, a 1x1 conv 14 -> 10."""
    chain = (1, *WIDTHS)
    convs = sum(9 * cin * cout for cin, cout in zip(chain, chain[1:], strict=False))
    return convs + 2 * sum(WIDTHS) + 14 * 10


def macs(first_side: int) -> int:
    """Multiply-adds per image: the first 3x3 conv at ``first_side``², then 13 -> 11, 9, 7, 5 and the 1x1 head."""
    a, b, c, d, e = WIDTHS
    return (9 * a * first_side**2 + 9 * a * b * 11**2 + 9 * b * c * 9**2 + 9 * c * d * 7**2 + 9 * d * e * 5**2
            + e * 10)


@pytest.mark.parametrize(("name", "first_side"), [("mnist_fast", 26), ("mnist_fast_s2", 13)])
def test_mnist_fast_models_count_by_hand(registry, name, first_side):
    spec = registry.model(name)
    model = registry.create_model(name).eval()
    assert sum(p.numel() for p in model.parameters()) == spec.params == mnist_fast_params() == 7_966
    x = torch.randn(3, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        out = model(x)
    assert out.shape == (3, 10) and torch.allclose(out.exp().sum(1), torch.ones(3))
    assert counter.get_total_flops() == 2 * 3 * macs(first_side)


def test_the_stride_variant_has_no_pool_and_no_26px_maps(registry):
    model = registry.create_model("mnist_fast_s2")
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.stride == (2, 2) and not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    sides = []
    model.features[0].register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]))
    model(torch.randn(1, 1, 28, 28))
    assert sides == [13]
    assert registry.model("mnist_fast_s2").recipe == registry.model("mnist_fast").recipe
