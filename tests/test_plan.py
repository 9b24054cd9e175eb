"""The run plan: every name resolved once, defaults applied once, checks before any data."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cnnbench import BenchError
from cnnbench.training.plan import Overrides, RunPlan, make_plan


def test_defaults_come_from_the_model(registry):
    plan = make_plan(registry, "mnist_gap")
    assert isinstance(plan, RunPlan)
    assert plan.model.name == "mnist_gap" and plan.dataset.name == "mnist"
    assert plan.normalizer.name == "batch" and plan.augmentation.name == "rotate10" and plan.loader.name == "memory"
    assert plan.recipe == registry.model("mnist_gap").recipe and plan.device == "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.device = "cuda"  # type: ignore[misc]


def test_overrides_apply_to_the_recipe_and_specs(registry):
    o = Overrides(epochs=2, lr=0.05, normalizer="group", augmentation="none", loader="torchvision", batch_size=64)
    plan = make_plan(registry, "mnist_gap", o)
    assert (plan.recipe.epochs, plan.recipe.lr, plan.recipe.batch_size) == (2, 0.05, 64)
    assert plan.recipe.scheduler == "step"  # untouched fields stay the model's
    assert (plan.normalizer.name, plan.augmentation.name, plan.loader.name) == ("group", "none", "torchvision")


def test_data_dir_is_resolved_by_the_core(registry, monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    assert make_plan(registry, "mnist_gap").data_dir == tmp_path
    assert make_plan(registry, "mnist_gap", Overrides(data_dir="elsewhere")).data_dir == Path("elsewhere")
    monkeypatch.delenv("BENCH_DATA_DIR")
    assert make_plan(registry, "mnist_gap").data_dir == Path("data")


def test_plan_names_the_plugin_behind_each_part(registry):
    plugins = make_plan(registry, "cifar_c13").plugins
    assert plugins["model"]["plugin"] == "cifar_models" and plugins["dataset"]["plugin"] == "cifar10"
    assert plugins["augmentation"]["plugin"] == "augment_cifar" and plugins["loader"]["plugin"] == "loaders"
    assert {p["distribution"] for p in plugins.values()} == {"cnnbench"}


@pytest.mark.parametrize(
    "model, overrides, message",
    [
        ("nope", Overrides(), "unknown model 'nope'; valid models:"),
        ("mnist_gap", Overrides(normalizer="instance"), "valid normalizers: batch, group, layer"),
        ("mnist_gap", Overrides(augmentation="cifar-batch"), "'cifar-batch' is for cifar10, not mnist"),
        ("mnist_gap", Overrides(loader="disk"), "unknown loader 'disk'"),
        ("mnist_gap", Overrides(device="tpu"), "--device 'tpu'"),
        ("mnist_gap", Overrides(device="meta"), "cnnbench trains on cpu or cuda"),
        ("mnist_gap", Overrides(device="cuda"), "CUDA is not available"),
        ("mnist_gap", Overrides(precision="fp8"), "unknown precision 'fp8'"),
        ("mnist_gap", Overrides(lr=float("nan")), "recipe lr is nan"),
        ("mnist_gap", Overrides(optimizer="lion"), "unknown optimizer 'lion'"),
    ],
)
def test_bad_plans_fail_before_any_data(registry, model, overrides, message):
    import torch

    if "CUDA is not available" in message and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BenchError, match=message.replace("(", r"\(")):
        make_plan(registry, model, overrides)
