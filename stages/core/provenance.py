"""Where each texel of a completed UV texture came from, and the one seen-or-mirrored rule.

Shared by every completion method (:mod:`stages.completion`) and the pseudo ground truth
(:mod:`stages.pseudo_gt`), which therefore need not import each other.
"""

from __future__ import annotations

import numpy as np

#: Provenance codes written into ``provenance.png`` (as colours, see PROVENANCE_COLOURS).
VISIBLE, MIRRORED, MODEL, OUTSIDE = 1, 2, 3, 0
PROVENANCE_COLOURS = {OUTSIDE: (0, 0, 0), VISIBLE: (70, 200, 90), MIRRORED: (70, 130, 240), MODEL: (235, 120, 60)}
#: A seen texel at or above this confidence keeps its own colour even when its mirror partner was
#: seen better (below it, the better-seen partner wins): the ``keep_confidence`` setting of
#: ``mirror``, ``blend``/``pseudo-gt`` and ``unet``.
KEEP_CONFIDENCE = 0.3


def seen_or_mirrored(confidence: np.ndarray, layout: np.ndarray, *, mirror: bool = True,
                     keep_confidence: float = KEEP_CONFIDENCE,
                     partner: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Keep the seen texel or use its mirror partner (``u -> 1 - u``, the flipped column, unless
    ``partner`` gives the partners' confidence for a layout that is not symmetric in UV).

    Args:
        confidence: ``(S, S)`` unwrap confidence (0 = not seen).
        layout: ``(S, S)`` bool UV layout.
        mirror: consider mirror partners at all (False: ``mirrored`` is empty).
        keep_confidence: a seen texel at or above this confidence is always kept.
        partner: ``(S, S)`` each texel's mirror partner's confidence (``UVLayout.mirror``);
            default the flipped column.

    Returns:
        ``(seen, mirrored)`` ``(S, S)`` bool: texels that keep the photo's colour (seen, and either
        confident enough or seen at least as well as their partner), and unkept texels whose
        partner was seen better.
    """
    if not mirror:
        partner = np.zeros_like(confidence)
    elif partner is None:
        partner = confidence[:, ::-1]
    seen = layout & (confidence > 0) & ((confidence >= keep_confidence) | (confidence >= partner))
    mirrored = layout & ~seen & (partner > confidence)
    return seen, mirrored


def provenance_map(layout: np.ndarray, visible: np.ndarray, mirrored: np.ndarray | None = None) -> np.ndarray:
    """``(S, S)`` uint8 provenance codes: OUTSIDE beyond the layout, VISIBLE where the photo's texels
    were kept, MIRRORED where their mirror partners were used, MODEL for the rest of the layout."""
    provenance = np.full(layout.shape, OUTSIDE, dtype=np.uint8)
    provenance[layout] = MODEL
    if mirrored is not None:
        provenance[mirrored & layout] = MIRRORED
    provenance[visible & layout] = VISIBLE
    return provenance


def provenance_image(provenance: np.ndarray) -> np.ndarray:
    """``(S, S)`` provenance codes -> ``(S, S, 3)`` uint8 colours (PROVENANCE_COLOURS)."""
    out = np.zeros(provenance.shape + (3,), dtype=np.uint8)
    for code, colour in PROVENANCE_COLOURS.items():
        out[provenance == code] = colour
    return out


def provenance_fractions(provenance: np.ndarray, layout: np.ndarray) -> dict[str, float]:
    """``visible_fraction``, ``mirrored_fraction``, ``smooth_fraction``: shares of the layout's texels
    (``(S, S)`` bool) whose ``provenance`` code is VISIBLE, MIRRORED or MODEL, rounded to 4 places."""
    n = max(1, int(layout.sum()))
    return {f"{name}_fraction": round(float((provenance == code).sum()) / n, 4)
            for name, code in (("visible", VISIBLE), ("mirrored", MIRRORED), ("smooth", MODEL))}
