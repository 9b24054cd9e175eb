"""Lifecycle plugin: records every call and stops runs after their first epoch."""

from cnnbench import hookimpl

CALLS: list[str] = []


@hookimpl
def cnnbench_run_start(run):
    CALLS.append(f"start {run.model}")


@hookimpl
def cnnbench_epoch_end(run, epoch):
    CALLS.append(f"epoch {epoch.epoch}")
    return True


@hookimpl
def cnnbench_run_end(run, record):
    CALLS.append(f"end {record.epochs_run}")
    record.extra["stopper_saw"] = len(CALLS)
