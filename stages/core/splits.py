"""Train / hold-out splits of the data sets facetex builds models from.

London Set (../shared/faces/london, files ``NNN_03.jpg`` neutral and ``NNN_08.jpg`` smiling of
person ``NNN``): split by person, never by photo, so no held-out person's face (in either
expression) reaches a shipped model. Held out: every person whose number is a multiple of 5.
The built-in face model's mean *shape* used all 102 neutral photos (geometry only, no texture);
every texture model (PCA albedo, trained networks) must train on ``split == "train"`` only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_LONDON_NAME = re.compile(r"^(\d{3})_(03|08)$")


def london_person(path: str | Path) -> int | None:
    """Person number of a London Set photo (``012_03.jpg`` -> 12), or None for other files."""
    match = _LONDON_NAME.match(Path(path).stem)
    return int(match.group(1)) if match else None


def london_split(path: str | Path) -> str | None:
    """``"holdout"`` or ``"train"`` for a London Set photo, None for other files."""
    person = london_person(path)
    if person is None:
        return None
    return "holdout" if person % 5 == 0 else "train"


def split_holdout_folders(folders: list[Path]) -> tuple[list[Path], list[Path]]:
    """Split facetex output folders into trainable ones and London hold-out ones (never trained on).

    A folder counts as hold-out when its fit.json ``source`` (or, failing that, the folder name) is
    a London Set hold-out photo (:func:`london_split`). Every ``facetex train`` command drops them,
    so no shipped or user-trained model sees the people the benchmarks score on.
    """
    keep, held = [], []
    for folder in folders:
        name = Path(folder).name
        try:
            name = json.loads((Path(folder) / "fit.json").read_text()).get("source") or name
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            pass
        (held if london_split(name) == "holdout" else keep).append(Path(folder))
    return keep, held
