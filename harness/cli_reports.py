"""Report commands: leaderboard, plot, misclassified, compare (work in progress)."""

from __future__ import annotations

import click


@click.command()
@click.option("--results-dir", type=click.Path(file_okay=False), default="results", show_default=True)
def leaderboard(results_dir: str) -> None:
    """Table of the runs in RESULTS_DIR and the targets each meets."""
    raise click.ClickException("not implemented yet")


COMMANDS = [leaderboard]
