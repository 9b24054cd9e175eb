"""Option types shared by the commands (numbers checked before anything runs)."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import click


class FiniteFloat(click.ParamType):
    """A float that is finite and within ``[low, high)`` (NaN and infinity are refused)."""

    name = "float"

    def __init__(self, low: float, high: float | None = None, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        too_low = number <= self.low if self.low_open else number < self.low
        if not math.isfinite(number) or too_low or (self.high is not None and number >= self.high):
            upper = f" and below {self.high}" if self.high is not None else ""
            bound = "above" if self.low_open else "at least"
            self.fail(f"{value!r} is not a finite number {bound} {self.low}{upper}", param, ctx)
        return number


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Warnings raised inside (a record skipped as unreadable ...) shown as one ``warning:`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)
