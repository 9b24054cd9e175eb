"""The one exception type the command line turns into a one-line message."""


class BenchError(Exception):
    """A problem the user can fix (bad name, missing file, corrupt data).

    The CLI prints ``error: <message>`` and exits non-zero instead of a traceback.
    """


def unknown_name(kind: str, name: str, valid: list[str]) -> BenchError:
    """Error for an unknown registry name that lists every valid one."""
    choices = ", ".join(sorted(valid)) or "(none registered)"
    return BenchError(f"unknown {kind} {name!r}; valid {kind}s: {choices}")


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
