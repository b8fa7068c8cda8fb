"""Completion methods: turn a partial UV texture (an ``unwrap``) into a complete one.

Every method is a class registered under a name with :func:`register_method`; ``complete
--method NAME`` looks it up here. A method is built once per run (:meth:`CompletionMethod.load`,
where a learned method loads its weights) and then called per texture, so a batch never reloads a
model. Later methods (``pca``, ``blend``, ``unet``, ``diffusion``) plug in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from stages.core.face_model import FaceModel
from stages.unwrap import UnwrapResult

# Provenance codes and the seen-or-mirrored rule live in core (pseudo_gt shares them); re-exported.
from stages.core.provenance import (  # noqa: F401
    MIRRORED, MODEL, OUTSIDE, PROVENANCE_COLOURS, VISIBLE, provenance_image, provenance_map,
)

#: Key of a completion's ``info`` listing the model files its method loaded (see
#: :meth:`CompletionMethod.record_model_file`).
MODEL_FILES_KEY = "model_files"
#: Methods with no learned or layout-bound data: they work on any face model's UV layout.
ANY_LAYOUT_METHODS = ("mirror", "telea")


@dataclass
class Completion:
    """A complete UV texture.

    Attributes:
        texture: ``(S, S, 3)`` float32 RGB in ``[0, 1]``, padded beyond the layout.
        provenance: ``(S, S)`` uint8, where each texel came from (VISIBLE, MIRRORED, MODEL, OUTSIDE).
        info: method name and numbers worth logging.
        extra_images: more images the method writes next to ``uv_complete.png``, ``{file name: (S, S, 3)
            float in [0, 1]}`` (e.g. ``uv_albedo.png``); every name must be in
            :data:`stages.complete.COMPLETION_FILES`.
        extra_json: JSON files the method writes, ``{file name: dict}`` (e.g. ``lighting.json``), same rule.
    """

    texture: np.ndarray
    provenance: np.ndarray
    info: dict
    extra_images: dict[str, np.ndarray] = field(default_factory=dict)
    extra_json: dict[str, dict] = field(default_factory=dict)

    def provenance_image(self) -> np.ndarray:
        """``(S, S, 3)`` uint8 colour-coded provenance for people to look at."""
        return provenance_image(self.provenance)


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

    def complete_fitted(self, unwrap: UnwrapResult, fit, photo: np.ndarray | None = None) -> Completion:
        """Complete with the unwrap's fit (:class:`stages.fit.FitResult`) and photo (``(H, W, 3)`` uint8, or
        None when it cannot be found) at hand. ``complete``, ``evaluate`` and the benchmarks call this;
        methods that need the pose, the light or the photo (``uvapm``, ``mirror`` in albedo space)
        override it. Default: :meth:`complete`."""
        return self.complete(unwrap)

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
    from stages.completion import diffusion, gan, inpaint, mirror, pca, unet, uvapm  # noqa: F401  (they register themselves)

    return dict(_REGISTRY)


def get_method(name: str) -> type[CompletionMethod]:
    methods = available_methods()
    if name not in methods:
        raise KeyError(f"unknown completion method {name!r}; available: {', '.join(sorted(methods))}")
    return methods[name]


Factory = Callable[..., CompletionMethod]
