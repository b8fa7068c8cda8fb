"""Completion methods: turn a partial UV texture (an ``unwrap``) into a complete one.

Every method is a class in its own module, listed by name in :data:`METHODS` (module and one-line
description) and registered there with :func:`register_method`; ``complete --method NAME`` looks it
up here. The registry is lazy: a method's module is imported only when the method is chosen
(:func:`get_method`), so ``complete`` with the default ``mirror`` never imports torch, which the
learned methods need (about 1 s of a cold start). A method is built once per run
(:meth:`CompletionMethod.load`, where a learned method loads its weights) and then called per texture,
so a batch never reloads a model. A new method adds its module and one line to :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import ClassVar, NamedTuple

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
#: Methods with no learned or layout-bound data: they work on any face model's UV layout (the others
#: run on the built-in layout and are moved: :mod:`stages.completion.via_builtin`).
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
    """Base class: subclasses set ``name`` (their key in :data:`METHODS`) and implement :meth:`complete`."""

    name: ClassVar[str] = ""

    @classmethod
    def load(cls, model: FaceModel, **options) -> CompletionMethod:
        """Build the method once per run (load weights here). Options are method-specific.

        A method whose model files hold the built-in layout only (every method but
        :data:`ANY_LAYOUT_METHODS`) is built on the built-in model and, for another ``model``, wrapped
        in :class:`stages.completion.via_builtin.ViaBuiltinLayout` (run there, moved back by the UV
        transfer, the rest of the head from ``mirror``'s head prior).
        """
        from stages.core.face_model import load_builtin_face_model

        builtin = load_builtin_face_model()
        if cls.name not in ANY_LAYOUT_METHODS and model.name != builtin.name:
            from stages.completion.via_builtin import ViaBuiltinLayout

            return ViaBuiltinLayout(model, cls.load(builtin, **options))
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


class MethodEntry(NamedTuple):
    """Where a method lives and what it does, known without importing it."""

    module: str
    description: str


#: Every built-in method: ``complete --method NAME`` and its help read this table; the module is
#: imported (and registers its class) only when the method is used.
METHODS: dict[str, MethodEntry] = {
    "mirror": MethodEntry("stages.completion.mirror",
                          "mirror from the symmetric side, smooth-fill the rest, seams blended (no model)"),
    "telea": MethodEntry("stages.completion.inpaint",
                         "OpenCV fast-marching inpainting (Telea); a face-agnostic baseline"),
    "pca": MethodEntry("stages.completion.pca",
                       "per-channel PCA albedo model fitted to the visible texels (smooth, complete)"),
    "blend": MethodEntry("stages.completion.pca",
                         "PCA fit + Poisson blending of the photo's texels + symmetric fill "
                         "(the pseudo ground truth of Yin et al.)"),
    "unet": MethodEntry("stages.completion.unet",
                        "weakly supervised UV generator (Yin et al.); built-in London model or --model DIR"),
    "gan": MethodEntry("stages.completion.gan",
                       "texture GAN inversion (Slossberg et al.): optimise w + noise so the render matches "
                       "the photo"),
    "diffusion": MethodEntry("stages.completion.diffusion",
                             "FreeUV cross-assembled diffusion from `facetex train diffusion-*` "
                             "(needs --model and --structure-model)"),
    "uvapm": MethodEntry("stages.completion.uvapm",
                         "PCA albedo + SH light fitted by differentiable rendering (UVAPM, Dai et al.), skin "
                         "detail from a VAE where the photo saw nothing: writes uv_albedo.png and lighting.json too"),
}

_REGISTRY: dict[str, type[CompletionMethod]] = {}


def register_method(cls: type[CompletionMethod]) -> type[CompletionMethod]:
    """Class decorator: make ``cls`` the class of ``complete --method cls.name`` (listed in :data:`METHODS`)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name not in METHODS or METHODS[cls.name].module != cls.__module__:
        raise ValueError(f"{cls.__name__} registers {cls.name!r}, which METHODS does not list in {cls.__module__}")
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> tuple[str, ...]:
    """The methods' names, sorted, without importing any of them."""
    return tuple(sorted(METHODS))


def available_methods() -> dict[str, type[CompletionMethod]]:
    """Every method's class by name (imports them all, torch included; the CLI uses :func:`method_names`)."""
    return {name: get_method(name) for name in method_names()}


def get_method(name: str) -> type[CompletionMethod]:
    """The class of method ``name``, importing its module on first use.

    Raises:
        KeyError: ``name`` is not in :data:`METHODS`.
    """
    if name not in METHODS:
        raise KeyError(f"unknown completion method {name!r}; available: {', '.join(method_names())}")
    if name not in _REGISTRY:
        import_module(METHODS[name].module)  # its @register_method fills _REGISTRY
    return _REGISTRY[name]


Factory = Callable[..., CompletionMethod]
