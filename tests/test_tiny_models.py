"""MLPerf Tiny's ResNet-8 against its published definition: layer shapes, parameters per layer, total."""

from __future__ import annotations

import torch

from cnnbench.training.summary import layer_table

# (type, output C x H x W, parameters) of every parameterised or shape-changing layer, in call order.
RESNET8 = [
    ("Conv2d", [16, 32, 32], 3 * 16 * 9 + 16), ("BatchNorm2d", [16, 32, 32], 32),
    ("Conv2d", [16, 32, 32], 16 * 16 * 9 + 16), ("BatchNorm2d", [16, 32, 32], 32),
    ("Conv2d", [16, 32, 32], 16 * 16 * 9 + 16), ("BatchNorm2d", [16, 32, 32], 32),
    ("Conv2d", [32, 16, 16], 16 * 32 * 9 + 32), ("BatchNorm2d", [32, 16, 16], 64),
    ("Conv2d", [32, 16, 16], 32 * 32 * 9 + 32), ("BatchNorm2d", [32, 16, 16], 64),
    ("Conv2d", [32, 16, 16], 16 * 32 + 32),  # 1x1 stride-2 shortcut
    ("Conv2d", [64, 8, 8], 32 * 64 * 9 + 64), ("BatchNorm2d", [64, 8, 8], 128),
    ("Conv2d", [64, 8, 8], 64 * 64 * 9 + 64), ("BatchNorm2d", [64, 8, 8], 128),
    ("Conv2d", [64, 8, 8], 32 * 64 + 64),
    ("AvgPool2d", [64, 1, 1], 0), ("Linear", [10], 64 * 10 + 10),
]


def test_resnet8_matches_the_reference(registry) -> None:
    spec = registry.model("resnet8")
    model = registry.create_model("resnet8").eval()
    rows = [(r["layer"].rsplit("-", 1)[0], r["output"], r["params"]) for r in layer_table(model, (3, 32, 32))]
    assert [r for r in rows if r[0] in {"Conv2d", "BatchNorm2d", "AvgPool2d", "Linear"}] == RESNET8
    weights = sum(p for kind, _, p in RESNET8 if kind != "BatchNorm2d")
    assert weights == 77_706 and sum(p for kind, _, p in RESNET8 if kind == "BatchNorm2d") == 480
    assert sum(p.numel() for p in model.parameters()) == spec.params == 78_186
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 10) and torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)


def test_resnet8_adds_its_shortcuts(registry) -> None:
    """Zeroing the residual branches leaves relu(shortcut(x)) at each stage: the additions are there."""
    from cnnbench.plugins.nets.tiny import ResidualStage

    model = registry.create_model("resnet8").eval()
    stages = [m for m in model.modules() if isinstance(m, ResidualStage)]
    assert [type(s.shortcut).__name__ for s in stages] == ["Identity", "Conv2d", "Conv2d"]
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        stages[0].body[4].weight.zero_()
        stages[0].body[4].bias.zero_()
        assert torch.equal(stages[0](x), torch.relu(x))
