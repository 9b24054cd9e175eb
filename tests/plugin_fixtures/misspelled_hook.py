"""A hook name with a typo."""

from cnnbench import hookimpl


@hookimpl
def cnnbench_epoch_ends(run, epoch):
    return True
