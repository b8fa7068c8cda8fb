"""Every command's help: choices as choices, a help text and a default on every option, no ``<bool>``
placeholder, one name per idea, papers by title; and build-pca's exit code on skipped maps."""

from __future__ import annotations

import click
import pytest
import typer.main
from typer.testing import CliRunner

from facetex_cli.main import app


def _commands(command: click.Command, path: tuple[str, ...] = ()):
    yield path, command
    if hasattr(command, "list_commands"):  # a group; facetex's builds its commands when asked (lazily)
        ctx = typer.Context(command)
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_every_command_is_walked():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"fit", "unwrap", "pseudo-gt", "build-pca", "complete", "render", "evaluate", "train unet",
            "train sampler", "train diffusion-appearance", "train diffusion-structure", "train detail-vae"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "facetex" for p, _ in COMMANDS])
def test_help_is_complete(path, command):
    options = [p for p in command.params if p.param_type_name == "option" and not p.hidden and p.name != "help"]
    assert options or not path or path in (("train",), ("assets",)), f"{path}: no options found (typer changed?)"
    for param in options:
        where = f"facetex {' '.join(path)} {param.opts[0]}"
        assert param.help and param.help.strip(), f"{where}: no help text"
        assert "seed 00" not in param.help, f"{where}: names a paper by its seed number"
        if not param.required and not param.is_flag and param.default is None:
            assert isinstance(param.show_default, str), f"{where}: default None needs a show_default that says it"
        elif not param.required:
            assert param.show_default is not False, f"{where}: default hidden"
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "<bool>" not in text and "BOOLEAN" not in text, text
    assert "seed 00" not in text
    assert "--resolution" not in text and "--size " not in text, "one name per idea: --uv-size, --view-size"


def _help(*path: str) -> str:
    return CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "250"}).output


def test_fixed_choices_are_choices():
    from stages.completion import available_methods

    assert f"<{'|'.join(sorted(available_methods()))}>" in _help("complete")
    assert "<ddim|dpm>" in _help("complete") and "<mediapipe|face-alignment>" in _help("complete")
    assert "<geometric|learned>" in _help("unwrap")
    assert "<none|blend|" in _help("evaluate")
    assert "<tiny|small|base>" in _help("train", "unet")
    assert "<tiny|small|sd15>" in _help("train", "diffusion-structure")
    assert "<no|fp16|bf16>" in _help("train", "diffusion-appearance")
    result = CliRunner().invoke(app, ["complete", "x.jpg", "--scheduler", "nope"])
    assert result.exit_code == 2 and "nope" in result.output


def test_build_pca_exits_non_zero_when_it_skipped_a_map(model, tmp_path):
    from stages.core.uv import uv_layout
    from tests.test_pca import R, hide, synthetic_truth, write_unwraps

    mask = uv_layout(model, R).mask
    maps, _, _ = synthetic_truth(mask, 12, seed=0)
    folders = write_unwraps(tmp_path / "unwraps", model, maps, hide(mask, 12, seed=1))
    args = ["build-pca", str(tmp_path / "unwraps"), "--components", "3", "--iterations", "1", "--uv-size", "64"]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "good.h5")])
    assert result.exit_code == 0, result.output
    (folders[3] / "unwrap.json").write_text("{not json")
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "m.h5")])
    assert result.exit_code == 1, result.output
    assert "face003" in result.output and "1 skipped" in result.output and (tmp_path / "m.h5").is_file()
