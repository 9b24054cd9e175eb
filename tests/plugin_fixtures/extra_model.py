"""A plugin that is not installed: adds one model when named with --plugin or BENCH_PLUGINS."""

from cnnbench import ModelSpec, Recipe, hookimpl


@hookimpl
def cnnbench_models():
    return [
        ModelSpec(
            "extra_net", "mnist", "cnnbench.plugins.nets.mnist:Seed004Step2", "extra", "test", 6_864, Recipe(epochs=1)
        )
    ]
