"""Seed lists from the command line and sweep files: ``"5"`` or ``"1,2,7"`` (TOML: ``5`` or
``[1, 2, 7]``), bounded before anything is built."""

from __future__ import annotations

import re

from cnnbench.errors import UsageError

MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit integer
MAX_SEEDS = 1000  # seeds in one command or sweep entry, a count or a list alike
_INT = re.compile(r"\s*\d{1,19}\s*")  # digits only: no sign, no exponent, no 10**30
_FORMS = "give a count (5) or a comma-separated list of seeds (1,2,3)"
_TOML_FORMS = "give a count (5) or a list of seeds ([0, 1, 2])"


def parse_seeds(text: str, max_seed: int = MAX_SEED, what: str = "--seeds") -> list[int]:
    """``"5"`` -> ``[0, 1, 2, 3, 4]``; ``"1,2,7"`` -> ``[1, 2, 7]``; seeds lie in ``[0, max_seed]``.

    At most ``MAX_SEEDS`` seeds: a count is checked before its list is built, a list before its
    items are converted.
    """
    text = str(text)
    label = f"{what} {_short(repr(text))}"
    parts = [p for p in text.split(",") if p.strip()] if "," in text else None
    if parts is not None and len(parts) > MAX_SEEDS:
        raise UsageError(f"{label}: at most {MAX_SEEDS} seeds in one command (got {len(parts):,})")
    items = parts if parts is not None else [text]
    if not all(_INT.fullmatch(p) for p in items):
        raise UsageError(f"{label}: {_FORMS}")
    if parts is None:
        return _checked(_count(int(text), label, "command"), label, max_seed)
    return _checked([int(p) for p in parts], label, max_seed)


def seeds_from_value(value: object, max_seed: int = MAX_SEED, what: str = "seeds") -> list[int]:
    """A sweep file's ``seeds``: a count (``5``), a list (``[1, 2, 7]``) or the text of either,
    bounded as ``parse_seeds`` bounds the command line's (a TOML integer can have any size)."""
    if isinstance(value, str):
        return parse_seeds(value, max_seed, what)
    label = f"{what} = {_short(repr(value))}"
    if isinstance(value, bool) or not isinstance(value, int | list | tuple):
        raise UsageError(f"{label}: {_TOML_FORMS}")
    if isinstance(value, int):
        return _checked(_count(value, label, "sweep entry"), label, max_seed)
    if len(value) > MAX_SEEDS:
        raise UsageError(f"{label}: at most {MAX_SEEDS} seeds in one sweep entry (got {len(value):,})")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise UsageError(f"{label}: {_TOML_FORMS}")
    return _checked(list(value), label, max_seed)


def _count(count: int, label: str, where: str) -> list[int]:
    """``0..count-1``, refused before it is built when it is longer than ``MAX_SEEDS``."""
    if count > MAX_SEEDS:
        raise UsageError(f"{label}: at most {MAX_SEEDS} seeds in one {where}")
    return list(range(max(count, 0)))


def _checked(numbers: list[int], label: str, max_seed: int) -> list[int]:
    if not numbers or len(set(numbers)) != len(numbers):
        raise UsageError(f"{label}: need at least one seed and no repeats")
    if any(s < 0 or s > max_seed for s in numbers):
        raise UsageError(f"{label}: seeds must lie in 0..{max_seed}")
    return numbers


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
