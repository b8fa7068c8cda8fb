"""diffusers is an optional extra: without it, the diffusion commands fail in one line naming the extra."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture
def no_diffusers(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)        # `import diffusers` raises ImportError


def test_importing_the_package_and_the_method_needs_no_diffusers(no_diffusers):
    from stages.completion import available_methods
    from stages.diffusion import MissingDependencyError, require_diffusers

    assert "diffusion" in available_methods()
    with pytest.raises(MissingDependencyError, match=r"needs diffusers.*pip install 'facetex\[diffusion\]'"):
        require_diffusers()


def test_cli_says_which_extra_to_install(no_diffusers, train_folders, tmp_path):
    from typer.testing import CliRunner

    from facetex_cli.main import app

    runner = CliRunner()
    result = runner.invoke(app, ["complete", str(train_folders[0]), "-o", str(tmp_path), "--method", "diffusion",
                                 "--model", str(tmp_path / "a"), "--structure-model", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "pip install 'facetex[diffusion]'" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["train", "diffusion-appearance", "--data", str(train_folders[0]), "-o",
                                 str(tmp_path / "m"), "--preset", "tiny", "--steps", "1"])
    assert result.exit_code == 2
    assert "pip install 'facetex[diffusion]'" in result.output and "Traceback" not in result.output
