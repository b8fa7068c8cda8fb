"""``--device auto|cpu|cuda|cuda:N``: the one way a command picks where its networks run.

torch is imported when a device is resolved, not with this module: the CLI and the completion methods
import it while building their options, and ``complete --method mirror`` never needs torch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from stages.core.errors import FacetexError

if TYPE_CHECKING:
    import torch


class DeviceError(FacetexError):
    """A requested device does not exist on this machine (one line)."""


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) -> ``cuda`` when available, else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Raises:
        DeviceError: an unknown spelling, or CUDA / GPU ``N`` not available here.
    """
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise DeviceError(None, f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if not torch.cuda.is_available():
        raise DeviceError(None, f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(None, f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(spec)
