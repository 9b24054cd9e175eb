"""MNIST networks: parameter counts and shapes from the seed documents, receptive fields."""

from __future__ import annotations

import pytest
import torch

from cnnbench.plugins.normalizers import group_count
from cnnbench.training.summary import layer_table

# model -> (documented params, output shape after each conv as the document's summary lists them)
DOCUMENTED = {
    "mnist_step1": (
        10_970,
        [[10, 26, 26], [10, 24, 24], [20, 22, 22], [10, 11, 11], [10, 9, 9], [20, 7, 7], [10, 7, 7], [10, 1, 1]],
    ),
    "mnist_step2": (6_864, [[8, 26, 26], [8, 24, 24], [8, 22, 22], [16, 9, 9], [8, 7, 7], [10, 5, 5], [10, 1, 1]]),
    "mnist_step3": (
        8_008,
        [[8, 26, 26], [8, 24, 24], [8, 22, 22], [16, 9, 9], [16, 7, 7], [8, 7, 7], [32, 5, 5], [16, 5, 5], [10, 1, 1]],
    ),
    "mnist_gap": (
        7_852,
        [[8, 26, 26], [8, 24, 24], [8, 22, 22], [13, 9, 9], [14, 7, 7], [8, 7, 7], [26, 5, 5], [50, 5, 5], [10, 1, 1]],
    ),
    "mnist_2block": (
        19_728,
        [
            [16, 26, 26],
            [16, 24, 24],
            [32, 22, 22],
            [16, 22, 22],
            [16, 9, 9],
            [16, 9, 9],
            [16, 7, 7],
            [32, 5, 5],
            [10, 5, 5],
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_params_and_conv_shapes_match_documents(registry, name):
    params, conv_shapes = DOCUMENTED[name]
    model = registry.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == params == registry.model(name).params
    rows = layer_table(model, (1, 28, 28))
    assert [r["output"] for r in rows if r["layer"].startswith("Conv2d")] == conv_shapes
    out = model(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-5)  # log-probabilities


@pytest.mark.parametrize("normalizer", ["batch", "group", "layer"])
@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_every_normalizer_builds_every_mnist_model(registry, name, normalizer):
    model = registry.create_model(name, normalizer=normalizer)
    assert sum(p.numel() for p in model.parameters()) == DOCUMENTED[name][0]  # 2 x C for each norm
    model.train()
    model(torch.randn(2, 1, 28, 28)).sum().backward()


def test_mnist_gap_layer_table_matches_seed_004(registry):
    rows = layer_table(registry.create_model("mnist_gap"), (1, 28, 28))
    # seed 004 step 4's summary: 35 layers before our log-softmax head, same order
    kinds = [r["layer"].split("-")[0] for r in rows][:35]
    assert kinds[:4] == ["Conv2d", "BatchNorm2d", "Dropout", "ReLU"]
    assert kinds[12] == "MaxPool2d" and kinds[33] == "AvgPool2d" and kinds[34] == "Conv2d"
    assert [r["params"] for r in rows if r["params"]] == [
        72,
        16,
        576,
        16,
        576,
        16,
        936,
        26,
        1638,
        28,
        112,
        16,
        1872,
        52,
        1300,
        100,
        500,
    ]


def test_receptive_fields(registry):
    rows = layer_table(registry.create_model("mnist_gap"), (1, 28, 28))
    conv_rf = [r["rf"] for r in rows if r["layer"].startswith(("Conv2d", "MaxPool2d"))]
    assert conv_rf == [3, 5, 7, 8, 12, 16, 16, 20, 20, 28]
    # seed 000: "max pooling was applied after we reached a receptive field of 7"
    rows = layer_table(registry.create_model("mnist_2block"), (1, 28, 28))
    pool = next(i for i, r in enumerate(rows) if r["layer"].startswith("MaxPool2d"))
    assert rows[pool - 1]["rf"] == 7 and rows[-1]["rf"] == 28


def test_dilation_and_stride_in_receptive_field():
    from torch import nn

    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, dilation=2))
    assert [r["rf"] for r in layer_table(model, (1, 32, 32))] == [3, 5, 13]


@pytest.mark.parametrize(("channels", "groups"), [(8, 4), (13, 1), (14, 2), (26, 2), (50, 2), (16, 4), (10, 2)])
def test_group_count_divides_channels(channels, groups):
    assert group_count(channels) == groups


def test_summary_command_text(registry):
    from cnnbench.training.summary import render_summary

    text = render_summary(registry, "mnist_gap")
    assert "Total params: 7,852" in text and "Final receptive field: 28 px" in text
