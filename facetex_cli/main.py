"""Entry point of the ``facetex`` command (console script ``facetex = facetex_cli.main:app``)."""

from __future__ import annotations

import typer
from typer.core import TyperOption

from facetex_cli.assets import assets_app
from facetex_cli.build_pca import build_pca_command
from facetex_cli.complete import complete_command
from facetex_cli.evaluate import evaluate_command
from facetex_cli.pseudo_gt import pseudo_gt_command
from facetex_cli.fit import fit_command
from facetex_cli.generate import generate_command
from facetex_cli.render import render_command
from facetex_cli.train import train_app
from facetex_cli.transfer import transfer_command
from facetex_cli.unwrap import unwrap_command

_display_type_rich = TyperOption.display_type_rich


def _flag_without_placeholder(self: TyperOption, ctx) -> str | None:
    """typer's rich help shows ``<bool>`` after every ``--x/--no-x`` flag (and ``--help``); flags take no value."""
    return None if self.is_flag and self.metavar is None else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_without_placeholder

app = typer.Typer(
    name="facetex", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Recover a complete facial UV texture from a single photo. Each stage reads and writes files, "
         "so stages chain in a Makefile; `facetex complete photo.jpg` runs the whole path.")
app.command("fit")(fit_command)
app.command("unwrap")(unwrap_command)
app.command("pseudo-gt")(pseudo_gt_command)
app.command("build-pca")(build_pca_command)
app.command("complete")(complete_command)
app.command("render")(render_command)
app.command("evaluate")(evaluate_command)
app.command("transfer")(transfer_command)
app.command("generate")(generate_command)
app.add_typer(train_app, name="train")
app.add_typer(assets_app, name="assets")


@app.callback(invoke_without_command=True)
def _main(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        from stages import __version__

        typer.echo(f"facetex {__version__}")
        raise typer.Exit()


if __name__ == "__main__":
    app()
