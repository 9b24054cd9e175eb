"""A plugin that is not installed: adds one model when named with --plugin or BENCH_PLUGINS."""

from harness import hookimpl
from harness.records import ModelSpec, Recipe


@hookimpl
def cnnbench_models():
    return [
        ModelSpec("extra_net", "mnist", "plugins.nets.mnist:Seed004Step2", "extra", "test", 6_864, Recipe(epochs=1))
    ]
