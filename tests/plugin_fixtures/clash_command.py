"""Adds a command named like a built-in one."""

import click

from cnnbench import hookimpl


@click.command("run")
def run():
    """Shadow `bench run`."""


@hookimpl
def cnnbench_commands():
    return [run]
