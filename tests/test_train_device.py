"""``--device``: one resolver for every command that runs a network."""

from __future__ import annotations

import pytest
import torch

from stages.models.device import DeviceError, resolve_device


def test_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_explicit_devices_are_checked(monkeypatch):
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(DeviceError, match="2 CUDA device"):
        resolve_device("cuda:2")


def test_evaluate_runs_learned_methods_on_the_device_asked(model, tmp_path, monkeypatch):
    """``evaluate --device``: the hidden-texel protocol's learned method is built on it; a bad one is
    one line and exit 2 before any work; methods without a network ignore it."""
    from typer.testing import CliRunner

    from facetex_cli.main import app
    from stages.evaluate.stage import MethodResolver

    import stages.completion.unet as unet_method

    asked = []
    monkeypatch.setattr(unet_method, "resolve_device", lambda spec: asked.append(spec) or torch.device("cpu"))
    MethodResolver(model, device="cpu")._load("unet", {}, tmp_path / "complete.json")
    assert asked == ["cpu"]
    assert MethodResolver(model, device="cpu")._load("mirror", {}, tmp_path / "complete.json") is not None
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--device", "gpu", "-o", str(tmp_path / "e")])
    assert result.exit_code == 2 and "--device must be auto, cpu, cuda or cuda:N" in result.output
    assert not (tmp_path / "e").exists()
