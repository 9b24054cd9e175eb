"""Returns something that is not a ModelSpec."""

from cnnbench import hookimpl


@hookimpl
def cnnbench_models():
    return [{"name": "not-a-record"}]
