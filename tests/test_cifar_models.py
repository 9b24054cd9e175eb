"""The CIFAR-10 networks of seeds 001-003 against their documents: parameter counts, layer
tables (type, output shape, parameters per layer) and receptive fields."""

from __future__ import annotations

import pytest
import torch

from cnnbench.training.summary import layer_table

# Seed 001's model summary, row by row: layer type, output C x H x W, parameters.
SEED001 = """
Conv2d 16x32x32 448
ReLU 16x32x32 0
BatchNorm2d 16x32x32 32
Dropout 16x32x32 0
Conv2d 32x32x32 4640
ReLU 32x32x32 0
BatchNorm2d 32x32x32 64
Dropout 32x32x32 0
Conv2d 16x32x32 528
MaxPool2d 16x16x16 0
Conv2d 16x16x16 2320
ReLU 16x16x16 0
BatchNorm2d 16x16x16 32
Dropout 16x16x16 0
Conv2d 32x16x16 4640
ReLU 32x16x16 0
BatchNorm2d 32x16x16 64
Dropout 32x16x16 0
Conv2d 32x16x16 9248
ReLU 32x16x16 0
BatchNorm2d 32x16x16 64
Dropout 32x16x16 0
Conv2d 16x16x16 528
MaxPool2d 16x8x8 0
Conv2d 32x8x8 4640
ReLU 32x8x8 0
BatchNorm2d 32x8x8 64
Dropout 32x8x8 0
Conv2d 32x6x6 9248
ReLU 32x6x6 0
BatchNorm2d 32x6x6 64
Dropout 32x6x6 0
Conv2d 32x4x4 9248
AdaptiveAvgPool2d 32x1x1 0
Conv2d 10x1x1 330
"""


def _unit(channels: int, size: int, conv_params: int) -> str:
    shape = f"{channels}x{size}x{size}"
    return (f"Conv2d {shape} {conv_params}\nReLU {shape} 0\nBatchNorm2d {shape} {2 * channels}\n"
            f"Dropout {shape} 0\n")


# Seed 002's summary: a 3x3 stem, then nine (2,304-param 3x3 to 128, 8,192-param 1x1 to 64)
# pairs at 28, 26, 26 ... 26, then AvgPool2d and the 640-param 1x1. Written out by pattern
# because the 78 rows repeat.
SEED002 = (
    _unit(64, 30, 1728)
    + "".join(_unit(128, s, 2304) + _unit(64, s, 8192) for s in (28, 26, 26, 26, 26, 26, 26, 26, 26))
    + "AvgPool2d 64x1x1 0\nConv2d 10x1x1 640\n"
)

# Seed 003 lists sizes and receptive fields, not a table: conv output (C, size) in order.
SEED003_CONVS = [
    (16, 32), (16, 32), (32, 32), (32, 32),  # C1-C4
    (16, 32), (16, 16),  # C5, POOL1
    (16, 16), (32, 16), (64, 16),  # C6-C8
    (32, 16), (32, 8),  # C9, POOL2
    (64, 8), (64, 8), (64, 8), (64, 8),  # C10, C11 (grouped 3x3 + 1x1 each)
    (64, 8),  # dilated
    (10, 8),  # output 1x1, then GAP
]
# receptive fields the document states after C1, block 1, trans 1, block 2, trans 2 (conv index)
SEED003_RF = {0: 3, 3: 9, 5: 11, 8: 23, 10: 27}


def parse(table: str) -> list[tuple[str, list[int], int]]:
    rows = []
    for line in table.strip().splitlines():
        kind, shape, params = line.split()
        rows.append((kind, [int(v) for v in shape.split("x")], int(params)))
    return rows


def rows_of(registry, name: str, normalizer: str = "batch") -> list[dict]:
    model = registry.create_model(name, normalizer)
    return layer_table(model, (3, 32, 32))


@pytest.mark.parametrize(
    ("name", "params", "source"),
    [
        ("cifar_3block", 46_202, "seed 001"),
        ("cifar_dilated_res", 100_416, "seed 002"),
        ("cifar_c13", 104_656, "seed 003"),
    ],
)
@pytest.mark.parametrize("normalizer", ["batch", "group", "layer"])
def test_parameter_count_and_output(registry, name: str, params: int, source: str, normalizer: str) -> None:
    spec = registry.model(name)
    assert spec.dataset == "cifar10" and spec.source.startswith(source)
    assert spec.params == params
    model = registry.create_model(name, normalizer).eval()
    assert sum(p.numel() for p in model.parameters()) == params
    with torch.no_grad():
        out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-5)  # log-softmax


@pytest.mark.parametrize(("name", "table"), [("cifar_3block", SEED001), ("cifar_dilated_res", SEED002)])
def test_layer_table_matches_the_document(registry, name: str, table: str) -> None:
    got = [(r["layer"].rsplit("-", 1)[0], r["output"], r["params"]) for r in rows_of(registry, name)]
    assert got[-1] == ("LogSoftmaxHead", [10], 0)  # the log-softmax the summary does not list
    assert got[:-1] == parse(table)


def test_seed003_shapes_and_receptive_fields(registry) -> None:
    convs = [r for r in rows_of(registry, "cifar_c13") if r["layer"].startswith("Conv2d")]
    assert [(r["output"][0], r["output"][1]) for r in convs] == SEED003_CONVS
    assert {i: convs[i]["rf"] for i in SEED003_RF} == SEED003_RF


def test_seed003_structure(registry) -> None:
    model = registry.create_model("cifar_c13")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.groups for c in convs if c.groups > 1] == [32, 32]  # C10, C11
    assert [c.dilation for c in convs if c.dilation != (1, 1)] == [(2, 2)]
    assert [c.stride for c in convs if c.stride != (1, 1)] == [(2, 2), (2, 2)]  # POOL1, POOL2
    assert all(c.bias is None for c in convs)


def test_seed002_is_residual_and_dilated(registry) -> None:
    from cnnbench.plugins.nets.cifar import SeparableBlock

    model = registry.create_model("cifar_dilated_res")
    blocks = [m for m in model.modules() if isinstance(m, SeparableBlock)]
    assert [b.residual for b in blocks] == [False, False] + [True] * 7
    assert [b.body[0][0].dilation[0] for b in blocks] == [1, 1, 1, 2, 4, 8, 12, 16, 20]


@pytest.mark.parametrize("name", ["cifar_3block", "cifar_dilated_res", "cifar_c13"])
def test_dropout_and_norm_are_passed_through(registry, name: str) -> None:
    model = registry.create_model(name, "layer", dropout=0.2)
    drops = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert drops and set(drops) == {0.2}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) and m.num_groups == 1 for m in model.modules())
    no_drop = registry.create_model(name, dropout=0.0)
    assert not any(isinstance(m, torch.nn.Dropout) for m in no_drop.modules())


def test_recipes_follow_the_documents(registry) -> None:
    c13 = registry.model("cifar_c13").recipe
    assert c13.epochs == 50 and c13.augmentation == "cifar-album"
    for name in ("cifar_3block", "cifar_dilated_res", "cifar_c13"):
        recipe = registry.model(name).recipe
        registry.augmentation(recipe.augmentation)  # names a registered augmentation
        assert recipe.dropout is not None


def test_one_training_step_lowers_the_loss(registry) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    model = registry.create_model("cifar_3block", dropout=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.nll_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
