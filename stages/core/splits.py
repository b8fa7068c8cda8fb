"""Train / hold-out splits of the data sets facetex builds models from.

London Set (../shared/faces/london, files ``NNN_03.jpg`` neutral and ``NNN_08.jpg`` smiling of
person ``NNN``): split by person, never by photo, so no held-out person's face (in either
expression) reaches a shipped model. Held out: every person whose number is a multiple of 5.
The built-in face model's mean *shape* used all 102 neutral photos (geometry only, no texture);
every texture model (PCA albedo, trained networks) must train on ``split == "train"`` only.
"""

from __future__ import annotations

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
