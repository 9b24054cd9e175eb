"""The launcher contract: how the jobs of a sweep run (``bench sweep --launcher NAME``).

After Hydra's ``Launcher``: a launcher is a subclass of ``Launcher`` that a plugin registers with
``cnnbench_launchers`` as ``LauncherSpec(name, TheClass, description)``, and its settings are its
own frozen dataclass (``Options``, a ``LauncherOptions`` whose fields are declared with
``option()``), as Hydra's joblib launcher keeps its settings in its own ``config.py``::

    @dataclass(frozen=True)
    class SlurmOptions(LauncherOptions):
        partition: str = option("gpu", "Slurm partition the jobs go to.")
        hours: float = option(1.0, "Time limit of each job, in hours.", low=0.1, high=168)

    class SlurmLauncher(Launcher[SlurmOptions]):
        Options = SlurmOptions

        def launch(self, jobs, on_start, on_done):
            ...  # one JobResult per job

Each field becomes an option of ``bench sweep`` named after the launcher (``--slurm-partition``,
``--slurm-hours``) and listed by ``bench sweep --help``: the launcher's name prefixes every option
it adds, so two launchers' options never clash, and an option of a launcher that was not chosen is
refused. The core knows no launcher's settings.

What the core does around a launcher: ``check(jobs)`` before the plan is printed, ``start()`` before
any job is claimed and ``stop()`` after it on every exit path. The jobs ``launch`` receives are
*claimed*: each holds an exclusive lock on ``RESULTS/KEY.claim`` (``self.claims[job.key]``) until
``launch`` returns, so a repeated or concurrent sweep never trains a job twice. A launcher that runs
a job in a child process on this machine passes the claim's descriptor to it (``pass_fds``), so the
claim lasts as long as the job, even when the sweep itself is killed.

What a launcher does: ``launch`` runs every job it is given (``cnnbench.sweep.jobs.run_job``
trains one, wherever it runs), calls ``on_start(job)`` and ``on_done(result)`` as jobs start and
end, writes each record into ``settings.results_dir`` on this machine and returns one
``JobResult`` per job. On ``KeyboardInterrupt`` it stops its running jobs before re-raising.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import os
import re
import socket
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from cnnbench.errors import PluginError, UsageError
from cnnbench.files import read_regular
from cnnbench.records import Factory, Job, JobResult, LaunchOptions, resolve

__all__ = [
    "CLAIM_SUFFIX", "JobClaim", "Launcher", "LauncherOptions", "OptionField", "claim_holder", "claim_job",
    "claim_jobs", "launcher_class", "option", "option_fields", "release_claim",
]

LAUNCHER_NAME = re.compile(r"[a-z][a-z0-9]{0,23}(-[a-z0-9]{1,23}){0,3}")  # it prefixes option names
OPTION_KINDS: tuple[type, ...] = (bool, int, float, str)
MAX_TEXT_OPTION = 1000  # characters of a text option
OptionValue = bool | int | float | str | None


# --- a launcher's options -------------------------------------------------------------


def option(default: OptionValue, help: str, *, low: float | None = None, high: float | None = None,
           metavar: str | None = None) -> Any:
    """A field of a launcher's ``Options`` dataclass: its default, its ``--help`` text and, for
    numbers, the bounds it must lie in (inclusive; NaN and infinity are never accepted). Typed
    ``Any`` as ``dataclasses.field`` is, so that ``gpus: float = option(0.0, ...)`` checks."""
    return dataclasses.field(default=default, metadata={"help": help, "low": low, "high": high, "metavar": metavar})


@dataclass(frozen=True)
class OptionField:
    """One option of a launcher, as ``bench sweep`` shows and checks it."""

    name: str  # the dataclass field
    kind: type  # bool, int, float or str
    optional: bool  # None is a value (unset)
    default: OptionValue
    help: str
    low: float | None = None
    high: float | None = None
    metavar: str | None = None

    def flag(self, launcher: str) -> str:
        """``--ray-gpus-per-job`` for field ``gpus_per_job`` of launcher ``ray``."""
        return f"--{launcher}-{self.name.replace('_', '-')}"

    def parse(self, text: str) -> OptionValue:
        """The value of ``text`` given on the command line; ``ValueError`` says why it cannot be one."""
        if self.kind is int:
            if not re.fullmatch(r"\s*[+-]?\d{1,20}\s*", text):
                raise ValueError(f"{text!r} is not a whole number")
            return self.check(int(text))
        if self.kind is float:
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a number") from None
            return self.check(number)
        return self.check(text)

    def check(self, value: object) -> OptionValue:
        """``value`` if this option can take it; ``ValueError`` (why not) otherwise."""
        if value is None and self.optional:
            return None
        if isinstance(value, bool):
            if self.kind is bool:
                return value
        elif isinstance(value, int | float) and self.kind in (int, float):
            if self.kind is float or isinstance(value, int):
                self._check_number(value)
                return float(value) if self.kind is float else value
        elif isinstance(value, str) and self.kind is str:
            if len(value) > MAX_TEXT_OPTION or not value.strip():
                raise ValueError(f"give 1 to {MAX_TEXT_OPTION} characters (got {len(value):,})")
            return value
        raise ValueError(f"{value!r} is not a {self.kind.__name__}")

    def _check_number(self, number: float) -> None:
        if not math.isfinite(number):
            raise ValueError(f"{number!r} is not a finite number")
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise ValueError(f"{number!r} is not in {self.bounds()}")

    def bounds(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"[{low}, {high}]"


@dataclass(frozen=True)
class LauncherOptions:
    """Base of a launcher's options dataclass: every field declared with ``option()`` is checked
    when an instance is made, from the command line or from Python alike."""

    def __post_init__(self) -> None:
        for spec in option_fields(type(self)):
            try:
                spec.check(getattr(self, spec.name))
            except ValueError as exc:
                raise UsageError(f"{type(self).__name__}.{spec.name}: {exc}") from None


def option_fields(options: type[LauncherOptions]) -> list[OptionField]:
    """The options a launcher's ``Options`` dataclass declares; a field of an unsupported type is a
    ``PluginError``."""
    if not (isinstance(options, type) and issubclass(options, LauncherOptions) and dataclasses.is_dataclass(options)):
        raise PluginError(f"{options!r} is not a LauncherOptions dataclass")
    try:
        hints = typing.get_type_hints(options)
    except Exception as exc:  # an annotation naming something its module does not define
        raise PluginError(f"{options.__name__}: cannot read its field types ({type(exc).__name__}: {exc})") from None
    return [_option_field(options, f, hints[f.name]) for f in dataclasses.fields(options)]


def _option_field(options: type, f: dataclasses.Field[Any], hint: Any) -> OptionField:
    args = typing.get_args(hint)
    optional = type(None) in args
    kinds = [a for a in args if a is not type(None)] if args else [hint]
    if len(kinds) != 1 or kinds[0] not in OPTION_KINDS or f.default is dataclasses.MISSING:
        raise PluginError(f"{options.__name__}.{f.name}: a launcher option is a bool, int, float or str "
                          f"(or None) with a default, declared with cnnbench.launcher.option()")
    meta = f.metadata
    return OptionField(f.name, kinds[0], optional, f.default, str(meta.get("help", "")), meta.get("low"),
                       meta.get("high"), meta.get("metavar"))


# --- the contract ---------------------------------------------------------------------

OptionsT = TypeVar("OptionsT", bound=LauncherOptions)


class Launcher(ABC, Generic[OptionsT]):
    """A way to run the jobs of a sweep. Subclass it, set ``Options`` to the launcher's options
    dataclass, and implement ``launch``; ``check``, ``start`` and ``stop`` are optional."""

    Options: ClassVar[type[LauncherOptions]] = LauncherOptions
    jobs_run_here: ClassVar[bool] = True  # each job's plan (its device) is checked against this machine
    # jobs read and write the results folder itself (not a copy): bench verify --launcher needs that
    shares_results_dir: ClassVar[bool] = False

    def __init__(self, settings: LaunchOptions, options: OptionsT) -> None:
        self.settings = settings  # what every launcher is told: folders, --jobs, progress
        self.options = options  # this launcher's own options
        self.claims: dict[str, JobClaim] = {}  # set by the core before launch: the claim of each job

    def check(self, jobs: list[Job]) -> None:
        """Refuse (``UsageError``) jobs this launcher cannot run, before the plan is printed."""

    def start(self) -> None:
        """Acquire what the jobs need (connect to a cluster, check its resources), within a time
        limit; called before any job is claimed."""

    def stop(self) -> None:
        """Release what ``start`` acquired; called on every exit path once ``start`` was called."""

    @abstractmethod
    def launch(self, jobs: list[Job], on_start: Callable[[Job], None],
               on_done: Callable[[JobResult], None]) -> list[JobResult]:
        """Run ``jobs`` (claimed, see the module's docstring); one ``JobResult`` per job."""


def launcher_class(name: str, factory: Factory) -> type[Launcher[Any]]:
    """The ``Launcher`` subclass a ``LauncherSpec`` names, with its options checked (``PluginError``)."""
    if not LAUNCHER_NAME.fullmatch(name):
        raise PluginError(f"launcher {name!r}: a launcher's name is lowercase letters, digits and '-' "
                          f"(it prefixes its bench sweep options)")
    try:
        cls = resolve(factory)
    except Exception as exc:  # a "module:Class" string that does not import
        raise PluginError(f"launcher {name!r}: cannot import {factory!r} ({type(exc).__name__}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Launcher)):
        raise PluginError(f"launcher {name!r}: LauncherSpec.factory must be a subclass of "
                          f"cnnbench.launcher.Launcher, not {cls!r}")
    try:
        option_fields(cls.Options)
    except PluginError as exc:
        raise PluginError(f"launcher {name!r}: {exc}") from None
    return cls


# --- claims: a job is trained by one process at a time ------------------------------------

CLAIM_SUFFIX = ".claim"


@dataclass(frozen=True)
class JobClaim:
    """An exclusive ``flock`` on ``RESULTS/KEY.claim``: while any process holds it (the sweep or
    the job process it was passed to), no other sweep starts the job. The kernel drops the lock
    when its last holder dies, however it dies."""

    key: str
    path: Path
    fd: int


def claim_path(results_dir: str | Path, key: str) -> Path:
    return Path(results_dir) / f"{key}{CLAIM_SUFFIX}"


def claim_job(results_dir: str | Path, key: str) -> JobClaim | None:
    """Claim job ``key``; None when another process holds its claim.

    A claim file left by a killed sweep is unlocked and is simply taken over. Only the holder
    removes the file, while still holding it, so a claimer that opened the file just before it was
    removed notices (its descriptor no longer names the path) and claims the new file instead.
    """
    path = claim_path(results_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if _names(fd, path):
            _write_holder(fd)
            return JobClaim(key, path, fd)
        os.close(fd)


def release_claim(claim: JobClaim) -> None:
    """Remove the claim file (if it is still this claim's) and drop the lock."""
    try:
        if _names(claim.fd, claim.path):
            claim.path.unlink(missing_ok=True)
    finally:
        with contextlib.suppress(OSError):
            os.close(claim.fd)


def claim_holder(results_dir: str | Path, key: str) -> str:
    """Who holds the claim of job ``key``, as far as its file says: ``pid 123 on host``."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = read_regular(claim_path(results_dir, key), 200).decode().strip()
        if re.fullmatch(r"pid \d+ on [\w.-]+", text):
            return text
    return "another process"


@contextlib.contextmanager
def claim_jobs(results_dir: str | Path, keys: Iterable[str]) -> Iterator[tuple[dict[str, JobClaim], dict[str, str]]]:
    """Claim every job it can: ``(claims by key, holder of each job claimed elsewhere)``; every
    claim is released on the way out, whatever ends the block."""
    claims: dict[str, JobClaim] = {}
    elsewhere: dict[str, str] = {}
    try:
        for key in keys:
            claim = claim_job(results_dir, key)
            if claim is None:
                elsewhere[key] = claim_holder(results_dir, key)
            else:
                claims[key] = claim
        yield claims, elsewhere
    finally:
        for claim in claims.values():
            release_claim(claim)


def _names(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open at ``fd``."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _write_holder(fd: int) -> None:
    """Say who holds the claim, for the message another sweep prints. Written in place, not
    atomically: the file's identity is the lock, so it cannot be replaced; a torn text only makes
    that message say "another process"."""
    text = f"pid {os.getpid()} on {socket.gethostname()}\n".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)
