"""The ``bench`` command line.

Only ``run``, ``summary`` and the report commands that rebuild models import torch, and
they do it inside the command, so ``bench --help`` and ``bench list`` start in a fraction
of a second. Plugins add subcommands through ``cnnbench_commands``.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cnnbench import __version__, deprecated
from cnnbench.cli import deploy, reports, run, speed, sweep, verify
from cnnbench.errors import BenchError, PluginError, RunInterrupted, Terminated
from cnnbench.registry import call_each_plugin, registry_from


class BenchGroup(click.Group):
    """Turns ``BenchError``, click's usage errors and Ctrl-C into one line and a non-zero exit,
    and adds the commands plugins return from ``cnnbench_commands``."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        # (always standalone: every error becomes one line here, so click's overloads do not apply)
        extra.pop("standalone_mode", None)
        deprecated.show_as_warning_lines(lambda line: click.echo(line, err=True))
        try:
            result = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.ClickException as exc:
            failed_in = getattr(exc, "ctx", None)  # usage errors know their command
            command = f"{failed_in.command_path} --help" if failed_in else "bench --help"
            click.echo(f"error: {exc.format_message()} (see '{command}')", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except BenchError as exc:  # raised while resolving a plugin command
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except RunInterrupted as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            click.echo("error: interrupted; finished runs keep their records (`bench runs` lists them and any "
                       "checkpoint to resume)", err=True)
            sys.exit(143 if isinstance(exc, Terminated) else 130)
        except OSError as exc:  # a full disk, a vanished folder, a permission: one line, never a traceback
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)

    def plugin_commands(self, ctx: click.Context) -> dict[str, click.Command]:
        found: dict[str, click.Command] = {}
        for plugin, commands in call_each_plugin(registry_from(ctx).pm, "cnnbench_commands", "adding commands"):
            for command in commands:
                if not isinstance(command, click.Command) or not command.name:
                    raise PluginError(f"plugin {plugin!r} returned {command!r}; expected a click.Command")
                if command.name in self.commands or command.name in found:
                    raise PluginError(f"plugin {plugin!r} adds command {command.name!r}, which exists")
                found[command.name] = command
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        try:
            extra = self.plugin_commands(ctx)
        except BenchError as exc:  # `bench --help` still helps
            click.echo(f"warning: {exc}", err=True)
            extra = {}
        return sorted([*self.commands, *extra])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        extra = self.plugin_commands(ctx)  # a plugin shadowing a built-in command is an error, always
        return self.commands.get(cmd_name) or extra.get(cmd_name)


@click.group(cls=BenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cnnbench")
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    is_eager=True,  # before an eager --help, which lists plugin commands
    metavar="MODULE",
    help="Import MODULE as a plugin (repeatable; the current folder is importable); BENCH_PLUGINS=mod1,mod2 too.",
)
@click.option(
    "--no-plugin",
    "blocked",
    multiple=True,
    is_eager=True,
    metavar="NAME",
    help="Do not load plugin NAME (repeatable), e.g. --no-plugin console for no console output.",
)
def main(plugins: tuple[str, ...], blocked: tuple[str, ...]) -> None:
    """cnnbench: train small CNNs on MNIST and CIFAR-10 and check them against published targets."""


for _module in (run, reports, sweep, speed, verify, deploy):  # each command module exports COMMANDS
    for _command in _module.COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
