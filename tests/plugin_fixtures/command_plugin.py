"""Adds a `bench hello` command through cnnbench_commands."""

import click

from cnnbench import hookimpl


@click.command()
@click.option("--name", default="world")
def hello(name):
    """Say hello."""
    click.echo(f"hello {name}")


@hookimpl
def cnnbench_commands():
    return [hello]
