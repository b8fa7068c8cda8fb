"""Presets and training settings of the diffusion networks.

Three presets:

- ``tiny``: every block 4-8 channels, 32^2 images; tests run a training step and a sampling in
  seconds on CPU.
- ``small``: trained from scratch on a CPU or a small GPU: own AutoencoderKL (4x downsampling,
  128^2 images -> 32^2 x 4 latents), a 3-level UNet (~7 M parameters), CNN image encoder.
- ``sd15``: Stable Diffusion 1.5's UNet and VAE from a local folder (``--base``, frozen), 512^2,
  the image encoder a local CLIP vision model (``--image-encoder``) or the CNN encoder.

Everything a model folder needs to be rebuilt is saved with it (:meth:`DiffusionTrainConfig.to_dict`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

from stages.train.runner import RunConfig, run_field
from stages.models.diffusion import NOISE_SCHEDULE  # noqa: F401  (re-exported: training settings read it here)

ATTENTIONS = ("channel", "self")
ENCODERS = ("cnn", "clip")
KINDS = ("appearance", "structure")
MIXED_PRECISION = ("no", "fp16", "bf16")


PRESETS: dict[str, dict] = {
    "tiny": {
        "image_size": 32, "uv_size": 32, "lr": 1e-3, "vae_steps": 2, "own_base": True,
        "vae": {"block_out_channels": (4, 8), "layers_per_block": 1, "norm_num_groups": 4, "latent_channels": 4},
        "unet": {"block_out_channels": (4, 8), "layers_per_block": 1, "norm_num_groups": 4,
                 "cross_attention_dim": 8, "attention_head_dim": 2,
                 "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                 "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")},
        "extractor": {"encoder": "cnn", "channels": (4, 8), "tokens": 4, "heads": 2},
    },
    "small": {
        "image_size": 128, "uv_size": 128, "lr": 2e-4, "vae_steps": 400, "own_base": True,
        "vae": {"block_out_channels": (32, 64, 64), "layers_per_block": 1, "norm_num_groups": 16,
                "latent_channels": 4},
        "unet": {"block_out_channels": (32, 64, 128), "layers_per_block": 1, "norm_num_groups": 16,
                 "cross_attention_dim": 128, "attention_head_dim": 8,
                 "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")},
        "extractor": {"encoder": "cnn", "channels": (32, 64, 128), "tokens": 8, "heads": 4},
    },
    "sd15": {
        "image_size": 512, "uv_size": 512, "lr": 3e-5, "vae_steps": 0, "own_base": False,
        "vae": None, "unet": None,
        "extractor": {"encoder": "clip", "layers": (-1, -5, -9, -13), "heads": 8,
                      "channels": (64, 128, 256, 512), "tokens": 16},
    },
}


@dataclass
class DiffusionTrainConfig(RunConfig):
    """Every knob of one diffusion network's training (saved with the weights).

    Attributes:
        kind: ``"appearance"`` (UV -> 2D on photos) or ``"structure"`` (2D -> UV on renders).
        preset: ``tiny``, ``small`` or ``sd15`` (sizes, default learning rate, base).
        steps: diffusion training steps (paper: 80k at batch 4).
        vae_steps: own-base presets only: autoencoder steps before the diffusion steps
            (appearance network; the structure network reuses the appearance network's base).
        batch_size: samples per step (paper: 4).
        lr: learning rate of the trained modules (None: the preset's; paper: 3e-5 with SD).
        lr_vae: autoencoder learning rate.
        cond_drop: probability of training a sample with zero extractor tokens, so sampling can
            use classifier-free guidance.
        attention: ``"channel"`` or ``"self"`` in the feature extractor (None: the paper's choice,
            channel for appearance, self for structure).
        landmarks: appearance only: give the ControlNet the 2D landmark image (ablation switch).
        base: a Stable Diffusion 1.5 diffusers folder (``sd15``), or for the structure network of
            an own-base preset the appearance model folder whose UNet/VAE it trains on (frozen).
        image_encoder: a local CLIP vision model folder (``encoder: clip``).
        image_size, uv_size: sides of the 2D images and UV maps (None: the preset's).
        seed: everything is seeded from it.
        sample_every, checkpoint_every: steps between sample sheets / resumable checkpoints.
        sample_steps: DDIM steps of the sample sheets.
        mixed_precision: accelerate's ``no``, ``fp16`` or ``bf16`` (GPU).
        vae, unet, extractor: overrides of the preset's module configs.
    """

    kind: str = "appearance"
    preset: str = run_field("small", "tiny (tests), small (from scratch, CPU or small GPU), sd15 (a local Stable "
                                     "Diffusion 1.5 folder as --base).", choices=tuple(PRESETS))
    steps: int = run_field(2000, "Diffusion training steps (paper: 80000).", min=1)
    vae_steps: int | None = run_field(None, "Own-base presets: autoencoder steps first.", min=0,
                                      show_default="the preset's")
    batch_size: int = run_field(4, "Samples per step (paper: 4).", min=1)
    lr: float | None = run_field(None, "Learning rate (paper: 3e-5 with SD).", min=0.0, show_default="the preset's")
    lr_vae: float = run_field(1e-3, "Autoencoder learning rate (own-base presets).", min=0.0)
    cond_drop: float = run_field(0.1, "Fraction of samples trained without the extractor's tokens (classifier-free "
                                      "guidance).", min=0.0, max=0.99)
    attention: str | None = run_field(None, "Extractor attention: channel (appearance, paper) or self (structure, "
                                            "paper); the other one as an ablation.", choices=ATTENTIONS,
                                      show_default="the network's paper choice")
    landmarks: bool = run_field(True, "2D landmark image as a condition (appearance network).")
    base: str | None = run_field(None, "Base model folder (unet/ + vae/): a local Stable Diffusion 1.5 diffusers "
                                       "folder for --preset sd15; for the structure network of tiny/small, the "
                                       "diffusion-appearance model folder.", show_default="none")
    image_encoder: str | None = run_field(None, "Local CLIP vision model folder (--encoder clip).",
                                          show_default="none")
    image_size: int | None = run_field(None, "Side of the 2D images (multiple of 16).", min=16,
                                       show_default="the preset's")
    uv_size: int | None = run_field(None, "Side of the UV maps (multiple of 16).", min=16, show_default="the preset's")
    seed: int = 0
    sample_every: int = 200
    checkpoint_every: int = 500
    sample_steps: int = run_field(20, "DDIM steps of the sample sheets.", min=1)
    mixed_precision: str = run_field("no", "accelerate mixed precision (GPU).", choices=MIXED_PRECISION)
    vae: dict | None = field(default_factory=dict)
    unet: dict | None = field(default_factory=dict)
    extractor: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.attention is None:
            self.attention = "channel" if self.kind == "appearance" else "self"
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        for name in ("steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.cond_drop < 1.0:
            raise ValueError(f"cond_drop must be in [0, 1), got {self.cond_drop}")
        preset = copy.deepcopy(PRESETS[self.preset])
        self.lr = float(preset["lr"] if self.lr is None else self.lr)
        self.vae_steps = int(preset["vae_steps"] if self.vae_steps is None else self.vae_steps)
        if self.lr <= 0 or self.lr_vae <= 0:
            raise ValueError("learning rates must be positive")
        if self.vae_steps < 0:
            raise ValueError(f"vae_steps must be >= 0, got {self.vae_steps}")
        self.image_size = int(preset["image_size"] if self.image_size is None else self.image_size)
        self.uv_size = int(preset["uv_size"] if self.uv_size is None else self.uv_size)
        for name in ("image_size", "uv_size"):
            value = getattr(self, name)
            if value < 16 or value % 16:
                raise ValueError(f"{name} must be a multiple of 16 and >= 16, got {value}")
        if preset["own_base"]:
            self.vae = _jsonable({**preset["vae"], **(self.vae or {})})
            self.unet = _jsonable({**preset["unet"], **(self.unet or {})})
        else:
            self.vae, self.unet = None, None
            if self.base is None:
                raise ValueError(f"preset {self.preset!r} needs --base: a local Stable Diffusion 1.5 diffusers "
                                 f"folder (unet/, vae/); see data_manifests/stable_diffusion.md")
        if preset["own_base"] and self.kind == "structure" and self.base is None:
            raise ValueError("the structure network trains on the appearance network's base: pass --base "
                             "APPEARANCE_MODEL_DIR (train diffusion-appearance first)")
        extractor = {**preset["extractor"], **self.extractor, "attention": self.attention}
        if extractor["encoder"] not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {extractor['encoder']!r}")
        if extractor["encoder"] == "clip":
            if self.image_encoder is None:
                raise ValueError("the clip image encoder needs --image-encoder: a local CLIP vision model folder "
                                 "(or use --encoder cnn)")
            extractor["encoder_path"] = str(self.image_encoder)
        self.extractor = _jsonable(extractor)

    @property
    def own_base(self) -> bool:
        """True when the VAE and UNet are this project's small from-scratch models."""
        return bool(PRESETS[self.preset]["own_base"])

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> DiffusionTrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _jsonable(value):
    """Tuples -> lists recursively (what a JSON round trip gives), so saved and live configs compare equal."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
