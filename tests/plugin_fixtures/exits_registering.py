"""Calls sys.exit while registering its models."""

import sys

from cnnbench import hookimpl


@hookimpl
def cnnbench_models():
    sys.exit(0)
