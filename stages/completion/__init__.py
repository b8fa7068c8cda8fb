"""Completion methods: turn a partial UV texture (an ``unwrap``) into a complete one.

Every method is a class registered under a name with :func:`register_method`; ``complete
--method NAME`` looks it up here. A method is built once per run (:meth:`CompletionMethod.load`,
where a learned method loads its weights) and then called per texture, so a batch never reloads a
model. Later methods (``pca``, ``blend``, ``unet``, ``diffusion``) plug in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from stages.core.face_model import FaceModel
from stages.unwrap import UnwrapResult

#: Provenance codes written into ``provenance.png`` (as colours, see PROVENANCE_COLOURS).
VISIBLE, MIRRORED, MODEL, OUTSIDE = 1, 2, 3, 0
#: Key of a completion's ``info`` listing the model files its method loaded (see
#: :meth:`CompletionMethod.record_model_file`).
MODEL_FILES_KEY = "model_files"
#: Methods with no learned or layout-bound data: they work on any face model's UV layout.
ANY_LAYOUT_METHODS = ("mirror", "telea")
PROVENANCE_COLOURS = {OUTSIDE: (0, 0, 0), VISIBLE: (70, 200, 90), MIRRORED: (70, 130, 240), MODEL: (235, 120, 60)}


@dataclass
class Completion:
    """A complete UV texture.

    Attributes:
        texture: ``(S, S, 3)`` float32 RGB in ``[0, 1]``, padded beyond the layout.
        provenance: ``(S, S)`` uint8, where each texel came from (VISIBLE, MIRRORED, MODEL, OUTSIDE).
        info: method name and numbers worth logging.
    """

    texture: np.ndarray
    provenance: np.ndarray
    info: dict

    def provenance_image(self) -> np.ndarray:
        """``(S, S, 3)`` uint8 colour-coded provenance for people to look at."""
        return provenance_image(self.provenance)


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


class CompletionMethod:
    """Base class: subclasses set ``name`` and ``description`` and implement :meth:`complete`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @classmethod
    def load(cls, model: FaceModel, **options) -> CompletionMethod:
        """Build the method once per run (load weights here). Options are method-specific.

        Raises:
            BadInputError: the method's model files hold the built-in layout only (every method but
                :data:`ANY_LAYOUT_METHODS`) and ``model`` is another face model (one line).
        """
        from stages.core.errors import BadInputError
        from stages.core.face_model import load_builtin_face_model

        builtin = load_builtin_face_model().name
        if cls.name not in ANY_LAYOUT_METHODS and model.name != builtin:
            raise BadInputError(None, f"completion method {cls.name!r} was built on the {builtin} UV layout, not "
                                      f"{model.name}'s; use {' or '.join(ANY_LAYOUT_METHODS)} with this face model")
        return cls(model, **options)

    def __init__(self, model: FaceModel, **options):
        self.model = model
        self.options = options
        #: Model files this method was built with, ``{load option: model_file_record(path)}``; methods
        #: put it into every completion's ``info`` under :data:`MODEL_FILES_KEY` so ``evaluate`` can
        #: rebuild exactly this method (and notice when the file changed).
        self.model_files: dict[str, dict] = {}

    def record_model_file(self, option: str, path) -> None:
        """Remember that load option ``option`` (e.g. ``pca_path``) resolved to the model at ``path``."""
        from stages.core.checksums import model_file_record

        self.model_files[option] = model_file_record(path)

    def complete(self, unwrap: UnwrapResult) -> Completion:  # pragma: no cover - interface
        raise NotImplementedError

    def complete_batch(self, unwraps: list[UnwrapResult]) -> list[Completion]:
        """Complete several textures; learned methods override this with one batched forward pass."""
        return [self.complete(unwrap) for unwrap in unwraps]


_REGISTRY: dict[str, type[CompletionMethod]] = {}


def register_method(cls: type[CompletionMethod]) -> type[CompletionMethod]:
    """Class decorator: make ``cls`` available as ``complete --method cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> dict[str, type[CompletionMethod]]:
    """Registered methods by name (importing the built-in ones first)."""
    from stages.completion import diffusion, inpaint, mirror, pca, unet  # noqa: F401  (they register themselves)

    return dict(_REGISTRY)


def get_method(name: str) -> type[CompletionMethod]:
    methods = available_methods()
    if name not in methods:
        raise KeyError(f"unknown completion method {name!r}; available: {', '.join(sorted(methods))}")
    return methods[name]


Factory = Callable[..., CompletionMethod]
