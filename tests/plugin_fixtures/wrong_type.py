"""Returns something that is not a ModelSpec."""

from harness import hookimpl


@hookimpl
def cnnbench_models():
    return [{"name": "not-a-record"}]
