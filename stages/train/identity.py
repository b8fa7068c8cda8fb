"""Identity loss of seed 001 (eq. 13): a face-recognition network compares a render with the photo.

Seed 001 uses LightCNN features. The loss has to be differentiable, which rules out dlib's face
recogniser (``evaluate``'s identity metric: C++, no gradients). The network is therefore a
TorchScript file the user exports from whatever face-recognition model they may use (LightCNN,
ArcFace, FaceNet...), loaded like ``evaluate``'s feature networks (:class:`FeatureExtractor`: a
sidecar ``<file>.json`` gives its input ``size``, ``mean`` and ``std``; defaults 112, 0.5, 0.5, the
common ArcFace convention). Nothing is downloaded; without a file the loss is off.

The loss is ``1 - cos(F(render), F(photo))`` averaged over the batch (cosine rather than seed 001's
L1 on features: face embeddings are compared by angle); the photo's embedding is a constant.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from stages.core.errors import MissingArtifactError


class IdentityNetwork:
    """A frozen face-embedding network for the identity loss.

    Args:
        extractor: a loaded :class:`stages.evaluate.metrics.FeatureExtractor`.
        device: where to run it.
    """

    def __init__(self, extractor, device: torch.device | str = "cpu"):
        self.extractor = extractor
        self.extractor.model.to(device)
        for parameter in self.extractor.model.parameters():
            parameter.requires_grad_(False)

    @property
    def sha256(self) -> str:
        return self.extractor.sha256

    def loss(self, rendered: Tensor, photo: Tensor) -> Tensor:
        """``1 - cos`` between embeddings.

        Args:
            rendered: ``(B, 3, R, R)`` renders in ``[0, 1]`` (gradients flow back through them).
            photo: ``(B, 3, R, R)`` masked photos in ``[0, 1]`` (treated as constants).

        Returns:
            Scalar mean over the batch, in ``[0, 2]``.
        """
        with torch.no_grad():
            reference = self.extractor.forward_tensor(photo)
        embedding = self.extractor.forward_tensor(rendered)
        return (1.0 - F.cosine_similarity(embedding, reference, dim=1)).mean()


def load_identity_network(path: str | Path, device: torch.device | str = "cpu") -> IdentityNetwork:
    """Load the TorchScript face-embedding file; :class:`MissingArtifactError` naming it if unusable."""
    from stages.evaluate.metrics import FeatureExtractor, MetricUnavailable

    try:
        extractor = FeatureExtractor(path, size=112, mean=0.5, std=0.5)
    except MetricUnavailable as exc:
        raise MissingArtifactError(None, f"identity model unusable: {exc}") from None
    return IdentityNetwork(extractor, device)
