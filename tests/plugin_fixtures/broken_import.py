"""Fails at import time."""

raise ImportError("this plugin cannot be imported")
