"""Raises while registering its models."""

from cnnbench import hookimpl


@hookimpl
def cnnbench_models():
    raise RuntimeError("boom while registering")
