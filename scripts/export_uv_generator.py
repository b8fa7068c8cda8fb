"""Export a trained UV generator for shipping: only the generator's weights, plus a model card.

    python scripts/export_uv_generator.py bench_out/models/unet_london_v2 stages/assets/uv_generator_london_v1

The training folder keeps its discriminators, optimizer state and sample sheets; the exported
folder holds ``config.json`` (the training settings, data list and step count carried over),
``weights.safetensors`` (the generator, bit-identical) and ``README.md``: a model card written from
the training config (command, data, settings, last losses). An existing card's section
"## Evaluation" (benchmark numbers added by hand from ``bench_completion.py``) is kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CARD = """# UV generator `{name}` (facetex `unet` completion method)

Seed 001's weakly supervised UV generator (a U-Net over the partial UV texture, its seen mask and
the UV position map), trained by `facetex train unet` without any complete ground-truth texture.

- Face model: `{face_model}`; UV size {uv_size}; preset `{preset}` ({params} parameters).
- Data: {n_folders} facetex output folders (fit + unwrap + pseudo-gt) of the London Face Research Lab
  set's TRAINING people only (every person whose number is not divisible by 5, neutral and smiling
  photos; `stages/core/splits.py`), made by `python scripts/prepare_training_data.py` from
  `../shared/faces/london/`. Photos: Face Research Lab London Set, CC BY 4.0 (DeBruine, L., & Jones,
  B. (2017), figshare, https://doi.org/10.6084/m9.figshare.5047666.v5); these weights are a derivative
  distributed under CC BY 4.0 with that attribution. See `data_manifests/uv_generator_london.md`.
- Training: {steps} steps, batch {batch_size}, Adam lr {lr} betas {betas}, seed {seed}, on {device}.
  Losses (weights): UV L1 to the real texels / pseudo-GT ({w_rec}), render L1 at the fitted pose
  ({w_render}), symmetry ({w_sym}), TV ({w_tv}), centre/side partial-UV discriminators ({w_adv}),
  face discriminator on renders ({w_face_adv}), identity ({identity}). Colour/lighting augmentation:
  {augment}.
{losses}- Command:

```bash
python scripts/prepare_training_data.py
facetex train unet --data bench_out/train_london -o {train_dir} --preset {preset} --steps {steps} \\
    --batch-size {batch_size} --uv-size {uv_size} --view-size {view_size} --seed {seed} --device cpu
python scripts/export_uv_generator.py {train_dir} {out_dir}
```

- `weights.safetensors` sha256: `{sha256}`.

Use: `facetex complete photo.jpg --method unet` (this folder is the default), or `--model DIR` for
another generator. Limits: 172 studio photos of 86 adults under one light: expect it to be
weaker on very different lighting, ages and skin tones than on the London hold-out people.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_dir", type=Path, help="model folder written by `facetex train unet`")
    parser.add_argument("out_dir", type=Path, help="folder to write (replaced atomically)")
    args = parser.parse_args()

    from stages.models.folder import export_pretrained
    from stages.models.uv_generator import UVGenerator, UVGeneratorConfig
    from stages.train.trainer import MODEL_TYPE

    card_path = args.out_dir / "README.md"
    evaluation = ""
    if card_path.is_file():
        text = card_path.read_text()
        if "## Evaluation" in text:
            evaluation = "\n" + text[text.index("## Evaluation"):]
    builders = {"generator": lambda c: UVGenerator(UVGeneratorConfig.from_dict(c))}
    export_pretrained(args.train_dir, args.out_dir, builders, model_type=MODEL_TYPE, names=["generator"])
    config = json.loads((args.out_dir / "config.json").read_text())
    train = config["train"]
    generator = builders["generator"](config["configs"]["generator"])
    sha = hashlib.sha256((args.out_dir / "weights.safetensors").read_bytes()).hexdigest()
    augment = train.get("augment", {})
    card = CARD.format(
        name=args.out_dir.name, face_model=config.get("face_model"), uv_size=config["uv_size"],
        preset=train["preset"], params=f"{sum(p.numel() for p in generator.parameters()) / 1e6:.2f} M",
        n_folders=len(config.get("data", [])), steps=config["steps"], batch_size=train["batch_size"],
        lr=train["lr_generator"], betas=tuple(train["betas"]), seed=train["seed"],
        device="CPU" if train.get("cpu", True) else "GPU", w_rec=train["w_rec"], w_render=train.get("w_render"),
        w_sym=train["w_sym"], w_tv=train["w_tv"], w_adv=train["w_adv"], w_face_adv=train.get("w_face_adv"),
        identity="off: no face-embedding network available here" if not train.get("identity_model")
        else train["w_id"],
        augment=", ".join(f"{k} {v}" for k, v in augment.items()) or "off",
        losses="".join(f"- Last step's losses: {', '.join(f'{k} {v:.4f}' for k, v in last.items())}.\n"
                       for last in [config.get("last_losses") or {}] if last),
        train_dir=args.train_dir, out_dir=args.out_dir, view_size=train.get("view_size", 0), sha256=sha)
    card_path.write_text(card + evaluation)
    print(f"exported {args.out_dir} ({(args.out_dir / 'weights.safetensors').stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
