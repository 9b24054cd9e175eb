"""The errors the command line turns into one line, by kind.

``BenchError`` is the rule: anything raised as one (or as a subclass) is a problem the user can
fix, printed as ``error: <message>`` with a non-zero exit instead of a traceback. The subclasses
say what kind of problem it is, so a caller (or a test) can tell them apart without reading text:

- ``UsageError``: an option, a name or a number that cannot work (unknown model, a seed count
  beyond the cap, an option that contradicts another);
- ``DataError``: a dataset or data file that is missing, corrupt or not what it claims;
- ``PluginError``: third-party (or built-in) plugin code failed or broke the hook contract;
- ``RecordError``: a run record, checkpoint or weights file that cannot be read or does not fit.
"""

from __future__ import annotations


class BenchError(Exception):
    """A problem the user can fix (bad name, missing file, corrupt data).

    The CLI prints ``error: <message>`` and exits non-zero instead of a traceback.
    """


class UsageError(BenchError):
    """An option, name or number that cannot work; nothing was run."""


class DataError(BenchError):
    """A dataset or data file that is missing, corrupt or of the wrong shape."""


class PluginError(BenchError):
    """Plugin code raised, or returned something the hook's contract does not allow."""


class RecordError(BenchError):
    """A run record, checkpoint or weights file that is unreadable, inconsistent or of another run."""


def unknown_name(kind: str, name: str, valid: list[str]) -> UsageError:
    """Error for an unknown registry name that lists every valid one."""
    choices = ", ".join(sorted(valid)) or "(none registered)"
    return UsageError(f"unknown {kind} {name!r}; valid {kind}s: {choices}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where SIGINT raises ``KeyboardInterrupt`` (``bench`` installs ``on_sigterm``)."""


def on_sigterm(signum: int, frame: object) -> None:
    """``signal.signal(signal.SIGTERM, on_sigterm)``: a SIGTERM ends a run as cleanly as Ctrl-C."""
    raise Terminated()


class RunInterrupted(Exception):
    """A run stopped by SIGINT / SIGTERM; its last checkpoint is kept for ``bench resume``."""

    def __init__(self, run_id: str, epochs_done: int, results_dir: str, terminated: bool) -> None:
        self.run_id, self.epochs_done, self.results_dir, self.terminated = run_id, epochs_done, results_dir, terminated
        self.exit_code = 143 if terminated else 130
        signal = "SIGTERM" if terminated else "SIGINT"
        saved = f"after epoch {epochs_done}" if epochs_done else "before epoch 1"
        super().__init__(
            f"{signal}: run {run_id} stopped during epoch {epochs_done + 1}; its checkpoint {saved} is kept. "
            f"Resume it with: bench resume {run_id} --results-dir {results_dir}"
        )
