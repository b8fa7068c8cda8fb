"""Entry point of the ``facetex`` command (console script ``facetex = facetex_cli.main:app``).

Commands load lazily: ``facetex complete ...`` imports ``facetex_cli.complete`` and nothing of the other
commands (``train`` and ``generate`` import torch, about 1 s of a cold start); ``facetex --help``
imports them all to list them.
"""

from __future__ import annotations

from importlib import import_module

import typer
import typer.main
from typer.core import TyperGroup, TyperOption

#: Every command: ``name -> (module, attribute)``, a command function or a :class:`typer.Typer` of
#: subcommands, in the order ``facetex --help`` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("facetex_cli.fit", "fit_command"),
    "unwrap": ("facetex_cli.unwrap", "unwrap_command"),
    "pseudo-gt": ("facetex_cli.pseudo_gt", "pseudo_gt_command"),
    "build-pca": ("facetex_cli.build_pca", "build_pca_command"),
    "complete": ("facetex_cli.complete", "complete_command"),
    "render": ("facetex_cli.render", "render_command"),
    "evaluate": ("facetex_cli.evaluate", "evaluate_command"),
    "transfer": ("facetex_cli.transfer", "transfer_command"),
    "generate": ("facetex_cli.generate", "generate_command"),
    "train": ("facetex_cli.train", "train_app"),
    "assets": ("facetex_cli.assets", "assets_app"),
}


def load_command(name: str):
    """The click command ``facetex NAME``, importing its module."""
    module, attribute = COMMANDS[name]
    target = getattr(import_module(module), attribute)
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)  # as add_typer would: no shell-completion options of its own
    else:  # a command function: a one-command app gives its click command
        function, target = target, typer.Typer(add_completion=False)
        target.command(name)(function)
        command = typer.main.get_command(target)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """The ``facetex`` group: lists :data:`COMMANDS` and builds a command when it is asked for."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in COMMANDS if n not in self.commands)]

    def get_command(self, ctx: typer.Context, cmd_name: str):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = load_command(cmd_name)
        return super().get_command(ctx, cmd_name)


_display_type_rich = TyperOption.display_type_rich


def _flag_without_placeholder(self: TyperOption, ctx) -> str | None:
    """typer's rich help shows ``<bool>`` after every ``--x/--no-x`` flag (and ``--help``); flags take no value."""
    return None if self.is_flag and self.metavar is None else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_without_placeholder

app = typer.Typer(
    name="facetex", cls=LazyGroup, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Recover a complete facial UV texture from a single photo. Each stage reads and writes files, "
         "so stages chain in a Makefile; `facetex complete photo.jpg` runs the whole path.")


@app.callback(invoke_without_command=True)
def _main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        from stages import __version__

        typer.echo(f"facetex {__version__}")
        raise typer.Exit()


if __name__ == "__main__":
    app()
