"""A model whose factory raises."""

from cnnbench import ModelSpec, Recipe, hookimpl


def broken(norm, dropout=0.0):
    raise ValueError("cannot build this")


@hookimpl
def cnnbench_models():
    return [ModelSpec("broken_net", "mnist", broken, "raises", "tests", 1, Recipe(epochs=1))]
