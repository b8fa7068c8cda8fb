"""Feature extractors that turn an image into cross-attention tokens for the latent UNet.

:class:`DetailExtractor` = image encoder -> features of several layers, each as a token sequence
on the same grid, concatenated along the feature dimension -> attention -> linear projection to
the UNet's ``cross_attention_dim``. The attention is switchable (seed 000's ablation):

- ``"channel"``: squeeze-and-excitation over the concatenated feature channels (a per-sample
  gate from the token mean), which lets the network select reliable channels of a defective
  unwrap: the appearance network's *flaw-tolerant detail extractor*;
- ``"self"``: a pre-norm transformer block over the tokens (with a learned position embedding),
  which relates and interpolates features across positions: the structure network's choice.

Image encoders: :class:`CNNEncoder` (trained with the extractor; the small presets) or a local
CLIP vision model (``transformers``, frozen, never downloaded; its weights are not copied into
the model folder, the folder records its path).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from stages.core.errors import MissingArtifactError
from stages.models.folder import load_pretrained, save_pretrained

#: ``model_type`` of an extractor's model folder (:mod:`stages.models.folder`, one network ``extractor``).
MODEL_TYPE = "diffusion_extractor"
#: CLIP's input normalisation (OpenAI CLIP statistics) and resolution.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CNNEncoder(nn.Module):
    """A small strided CNN; every stage's output is one feature layer.

    Args:
        in_channels: image channels.
        channels: output channels of each stage (each stage halves the resolution).
        tokens: side ``T`` of the token grid every layer is average-pooled to.

    ``forward(images (B, C, H, W)) -> list of (B, T*T, channels[i])``.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], tokens: int):
        super().__init__()
        self.tokens = int(tokens)
        stages, previous = [], in_channels
        for ch in channels:
            groups = math.gcd(ch, 8)
            stages.append(nn.Sequential(nn.Conv2d(previous, ch, 3, stride=2, padding=1), nn.GroupNorm(groups, ch),
                                        nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.GroupNorm(groups, ch),
                                        nn.SiLU()))
            previous = ch
        self.stages = nn.ModuleList(stages)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        layers, x = [], images
        for stage in self.stages:
            x = stage(x)
            pooled = F.adaptive_avg_pool2d(x, self.tokens)                  # (B, C, T, T)
            layers.append(pooled.flatten(2).transpose(1, 2))                 # (B, T*T, C)
        return layers


class CLIPEncoder(nn.Module):
    """A frozen local CLIP vision model; hidden states of the chosen layers are the feature layers.

    Args:
        path: a folder ``CLIPVisionModel.from_pretrained`` reads offline.
        layers: indices into ``hidden_states`` (negative from the last).

    ``forward(images (B, 3, H, W) in [-1, 1]) -> list of (B, 1 + N, hidden)``.
    """

    def __init__(self, path: str, layers: tuple[int, ...]):
        super().__init__()
        try:
            from transformers import CLIPVisionModel
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            raise MissingArtifactError(path, "a CLIP image encoder needs transformers: pip install transformers "
                                             "(or train with the cnn encoder)") from None
        if not Path(path).is_dir():
            raise MissingArtifactError(path, "CLIP vision model folder not found (facetex never downloads it; "
                                             "see data_manifests/stable_diffusion.md)")
        try:
            self.model = CLIPVisionModel.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise MissingArtifactError(path, f"not a loadable CLIP vision model ({type(e).__name__})") from None
        self.model.requires_grad_(False).eval()
        self.layers = tuple(int(i) for i in layers)
        self.size = int(self.model.config.image_size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def widths(self) -> list[int]:
        return [int(self.model.config.hidden_size)] * len(self.layers)

    def train(self, mode: bool = True):  # the encoder stays frozen (eval) while the extractor trains
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate((images + 1) / 2, size=(self.size, self.size), mode="bilinear", align_corners=False,
                          antialias=True)
        x = ((x - self.mean) / self.std).to(self.model.dtype)
        with torch.no_grad():
            hidden = self.model(pixel_values=x, output_hidden_states=True).hidden_states
        return [hidden[i] for i in self.layers]


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over the feature channels of a token sequence.

    ``forward(x (B, N, C)) -> (B, N, C)``: ``x * sigmoid(MLP(mean_N x))``.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.gate(x.mean(dim=1, keepdim=True)))


class SelfAttention(nn.Module):
    """A pre-norm transformer block (multi-head self attention + MLP) over the tokens.

    ``forward(x (B, N, C)) -> (B, N, C)``.
    """

    def __init__(self, channels: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"self attention: {channels} channels do not split into {heads} heads")
        self.norm1 = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class DetailExtractor(nn.Module):
    """Image -> ``(B, N, D)`` cross-attention tokens (see the module docstring).

    Args:
        config: ``encoder`` (``cnn`` | ``clip``), ``attention`` (``channel`` | ``self``),
            ``out_dim`` (the UNet's ``cross_attention_dim``), ``in_channels`` (default 3);
            cnn: ``channels``, ``tokens``; clip: ``encoder_path``, ``layers``; ``heads`` for self
            attention (the concatenated width is padded up to a multiple of it).
    """

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        encoder = config.get("encoder", "cnn")
        attention = config.get("attention", "channel")
        out_dim = int(config["out_dim"])
        if attention not in ("channel", "self"):
            raise ValueError(f"attention must be 'channel' or 'self', got {attention!r}")
        if encoder == "cnn":
            channels = tuple(int(c) for c in config["channels"])
            self.encoder = CNNEncoder(int(config.get("in_channels", 3)), channels, int(config["tokens"]))
            widths = list(channels)
            n_tokens = int(config["tokens"]) ** 2
        elif encoder == "clip":
            self.encoder = CLIPEncoder(str(config["encoder_path"]), tuple(config.get("layers", (-1,))))
            widths = self.encoder.widths
            n_tokens = (self.encoder.size // int(self.encoder.model.config.patch_size)) ** 2 + 1
        else:
            raise ValueError(f"encoder must be 'cnn' or 'clip', got {encoder!r}")
        width = sum(widths)
        heads = int(config.get("heads", 4))
        padded = heads * math.ceil(width / heads) if attention == "self" else width
        self.pad = padded - width
        self.position = nn.Parameter(torch.zeros(1, n_tokens, padded)) if attention == "self" else None
        self.attention = ChannelAttention(padded) if attention == "channel" else SelfAttention(padded, heads)
        self.norm = nn.LayerNorm(padded)
        self.proj = nn.Linear(padded, out_dim)

    @property
    def frozen_prefix(self) -> str | None:
        """State-dict prefix of the frozen encoder that is not saved (the CLIP weights), if any."""
        return "encoder.model." if isinstance(self.encoder, CLIPEncoder) else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images ``(B, C, H, W)`` in ``[-1, 1]``. Returns ``(B, N, out_dim)``."""
        feats = torch.cat(self.encoder(images), dim=2)                     # (B, N, sum widths)
        feats = feats.to(self.proj.weight.dtype)
        if self.pad:
            feats = F.pad(feats, (0, self.pad))
        if self.position is not None:
            feats = feats + self.position
        return self.proj(self.norm(self.attention(feats)))

    # -- save / load ---------------------------------------------------------------------------

    def trainable_state(self) -> dict[str, torch.Tensor]:
        prefix = self.frozen_prefix
        return {k: v for k, v in self.state_dict().items() if prefix is None or not k.startswith(prefix)}

    def save_pretrained(self, directory: str | Path) -> None:
        """Write a model folder (:mod:`stages.models.folder`); a frozen CLIP encoder is referenced
        (path + fingerprint), not copied."""
        extra = ({"encoder_fingerprint": folder_fingerprint(self.config["encoder_path"])}
                 if self.frozen_prefix is not None else {})
        save_pretrained(directory, {"extractor": self}, {"extractor": self.config}, model_type=MODEL_TYPE,
                        extra=extra)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> DetailExtractor:
        """Rebuild from :meth:`save_pretrained`'s folder; one-line :class:`MissingArtifactError` on any problem."""
        models, _ = load_pretrained(directory, {"extractor": cls}, model_type=MODEL_TYPE)
        return models["extractor"]


def folder_fingerprint(path: str | Path) -> str:
    """A quick identity of a weights folder or file: sha256 over names, sizes and the first and
    last MiB of every ``*.safetensors`` / ``*.bin`` / ``config.json`` in it (full hashes of
    multi-GB checkpoints belong in ``data_manifests/``, not in every model load)."""
    path = Path(path)
    files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path])
                   if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name == "config.json"))
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}:{size}".encode())
        with open(file, "rb") as fh:
            digest.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                digest.update(fh.read(1 << 20))
    return "quick-sha256:" + digest.hexdigest()
