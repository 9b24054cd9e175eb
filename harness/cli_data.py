"""Data commands: convert (work in progress)."""

from __future__ import annotations

COMMANDS: list = []
