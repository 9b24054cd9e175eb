"""Registers a model name the built-ins already use."""

from cnnbench import ModelSpec, Recipe, hookimpl


@hookimpl
def cnnbench_models():
    return [ModelSpec("mnist_gap", "mnist", "x:y", "clash", "test", 1, Recipe(epochs=1))]
