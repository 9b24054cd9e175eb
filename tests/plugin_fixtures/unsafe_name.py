"""Registers a model whose name would leave the results folder."""

from cnnbench import ModelSpec, Recipe, hookimpl


@hookimpl
def cnnbench_models():
    return [ModelSpec("../evil", "mnist", "cnnbench.plugins.nets.mnist:Seed004Step2", "x", "tests", 6_864,
                      Recipe(epochs=1))]
