"""Replaces the console: one line per run, printed from the lifecycle hooks."""

import click

from cnnbench import hookimpl


@hookimpl
def cnnbench_record_written(record, path):
    click.echo(f"QUIET {record.model} {record.final_test_acc:.4f}")
