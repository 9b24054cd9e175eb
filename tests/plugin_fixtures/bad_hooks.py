"""Lifecycle hooks that fail in the way the environment variable BAD_HOOK names."""

import os
import sys

from cnnbench import hookimpl


def _fail(where):
    if os.environ.get("BAD_HOOK") == where:
        raise RuntimeError(f"boom in {where}")
    if os.environ.get("BAD_HOOK") == f"exit-{where}":
        sys.exit(3)


@hookimpl
def cnnbench_run_start(run):
    _fail("run_start")


@hookimpl
def cnnbench_epoch_end(run, epoch):
    _fail("epoch_end")


@hookimpl
def cnnbench_run_end(run, record):
    _fail("run_end")
    if os.environ.get("BAD_HOOK") == "not-json":
        record.extra["tensor"] = object()


@hookimpl
def cnnbench_record_written(record, path):
    _fail("record_written")


@hookimpl
def cnnbench_epoch_batches(run, epoch, epochs, batches, progress):
    if os.environ.get("BAD_HOOK") == "batches":
        return 42
    return None
