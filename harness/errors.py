"""The one exception type the command line turns into a one-line message."""


class BenchError(Exception):
    """A problem the user can fix (bad name, missing file, corrupt data).

    The CLI prints ``error: <message>`` and exits non-zero instead of a traceback.
    """


def unknown_name(kind: str, name: str, valid: list[str]) -> BenchError:
    """Error for an unknown registry name that lists every valid one."""
    choices = ", ".join(sorted(valid)) or "(none registered)"
    return BenchError(f"unknown {kind} {name!r}; valid {kind}s: {choices}")
