"""Raises while registering its models."""

from harness import hookimpl


@hookimpl
def cnnbench_models():
    raise RuntimeError("boom while registering")
