# facetex — install, test, and the per-image pipeline.
#
#   make install                          install facetex (CPU torch pinned by constraints.txt)
#   make test                             the default test suite (CPU, a few minutes)
#   make pipeline PHOTOS=dir OUT=dir -j4  fit -> unwrap -> complete for every photo in PHOTOS;
#                                         only missing or stale artifacts are recomputed
#   make renders  PHOTOS=dir OUT=dir      + novel views, turntable.gif for every completed photo
#   make demo                             facetex complete on skimage's astronaut -> facetex_out/astronaut/
#   make evaluate PHOTOS=dir OUT=dir      the pipeline, then metrics.json/.csv + report.html -> OUT/eval
#   make bench                            per-stage timings (benchmarks/bench_stages.py)
#   make bench-completion                 every completion method on the hidden-texel benchmark
#   make face-model                       rebuild the built-in face model asset from ../shared
#   make albedo-model                     rebuild the shipped PCA albedo model from the London training people
#   make unet-model                       retrain the shipped UV generator on the London training people (CPU, ~1 h)
#   make train-diffusion-small            FreeUV's two networks, small from-scratch preset, on bench_out/train_london (CPU)
#   make train-diffusion-sd15 SD15=dir    the same at real scale on a GPU with accelerate (SD 1.5 base, SD_DATA=dir)
#   make bench-diffusion                  seconds per 512^2 texture of --method diffusion (benchmarks/bench_diffusion.py)

PYTHON   ?= python3
FACETEX  ?= facetex
PHOTOS   ?= ../shared/faces/london/neutral
OUT      ?= out
UV_SIZE  ?= 512
METHOD   ?= mirror
FACETEX_FLAGS ?=

PHOTO_FILES := $(sort $(wildcard $(PHOTOS)/*.jpg $(PHOTOS)/*.jpeg $(PHOTOS)/*.png $(PHOTOS)/*.JPG $(PHOTOS)/*.PNG))
STEMS       := $(basename $(notdir $(PHOTO_FILES)))
COMPLETED   := $(STEMS:%=$(OUT)/%/complete.json)
TURNTABLES  := $(STEMS:%=$(OUT)/%/turntable.gif)

.PHONY: install test test-all lint pipeline renders evaluate demo bench bench-completion figure face-model albedo-model unet-model clean-out help
.PHONY: train-diffusion-small train-diffusion-sd15 bench-diffusion
.DELETE_ON_ERROR:
# Keep the intermediate artifacts: they are outputs people look at, not temporaries.
.SECONDARY:

help:
	@sed -n '3,/^$$/p' Makefile | sed -n 's/^# \{0,1\}//p'

install:
	$(PYTHON) -m pip install -c constraints.txt torch==2.13.0
	$(PYTHON) -m pip install -c constraints.txt -e ".[dev,diffusion]"

test:
	$(PYTHON) -m pytest -q -n 2

test-all:
	$(PYTHON) -m pytest -q -n 2 -m "slow or not slow"

lint:
	ruff check stages facetex_cli tests benchmarks scripts

pipeline: $(COMPLETED)
	@echo "pipeline: $(words $(COMPLETED)) photos -> $(OUT)/"

renders: $(TURNTABLES)

# fit: one rule per photo extension; make picks the one whose photo exists.
$(OUT)/%/fit.json: $(PHOTOS)/%.jpg
	$(FACETEX) fit "$<" -o $(OUT) $(FACETEX_FLAGS)
$(OUT)/%/fit.json: $(PHOTOS)/%.jpeg
	$(FACETEX) fit "$<" -o $(OUT) $(FACETEX_FLAGS)
$(OUT)/%/fit.json: $(PHOTOS)/%.png
	$(FACETEX) fit "$<" -o $(OUT) $(FACETEX_FLAGS)
$(OUT)/%/fit.json: $(PHOTOS)/%.JPG
	$(FACETEX) fit "$<" -o $(OUT) $(FACETEX_FLAGS)
$(OUT)/%/fit.json: $(PHOTOS)/%.PNG
	$(FACETEX) fit "$<" -o $(OUT) $(FACETEX_FLAGS)

# unwrap: needs the photo (for colours) and its fit.
$(OUT)/%/unwrap.json: $(PHOTOS)/%.jpg $(OUT)/%/fit.json
	$(FACETEX) unwrap "$<" "$(OUT)/$*/fit.json" -o $(OUT) --uv-size $(UV_SIZE) $(FACETEX_FLAGS)
$(OUT)/%/unwrap.json: $(PHOTOS)/%.jpeg $(OUT)/%/fit.json
	$(FACETEX) unwrap "$<" "$(OUT)/$*/fit.json" -o $(OUT) --uv-size $(UV_SIZE) $(FACETEX_FLAGS)
$(OUT)/%/unwrap.json: $(PHOTOS)/%.png $(OUT)/%/fit.json
	$(FACETEX) unwrap "$<" "$(OUT)/$*/fit.json" -o $(OUT) --uv-size $(UV_SIZE) $(FACETEX_FLAGS)
$(OUT)/%/unwrap.json: $(PHOTOS)/%.JPG $(OUT)/%/fit.json
	$(FACETEX) unwrap "$<" "$(OUT)/$*/fit.json" -o $(OUT) --uv-size $(UV_SIZE) $(FACETEX_FLAGS)
$(OUT)/%/unwrap.json: $(PHOTOS)/%.PNG $(OUT)/%/fit.json
	$(FACETEX) unwrap "$<" "$(OUT)/$*/fit.json" -o $(OUT) --uv-size $(UV_SIZE) $(FACETEX_FLAGS)

# complete: fill the unwrap folder, export textured.obj/.mtl/.glb and previews.
$(OUT)/%/complete.json: $(OUT)/%/unwrap.json
	$(FACETEX) complete "$(OUT)/$*" -o $(OUT) --method $(METHOD) $(FACETEX_FLAGS)

# render: novel views, turntable, textured mesh of the completed texture.
$(OUT)/%/turntable.gif: $(OUT)/%/complete.json
	$(FACETEX) render "$(OUT)/$*/uv_complete.png" "$(OUT)/$*/fit.json" -o $(OUT) $(FACETEX_FLAGS)

demo:
	$(PYTHON) -c "from PIL import Image; from skimage import data; import os; os.makedirs('facetex_out', exist_ok=True); Image.fromarray(data.astronaut()).save('facetex_out/astronaut.png')"
	$(FACETEX) complete facetex_out/astronaut.png -o facetex_out

evaluate: $(COMPLETED)
	$(FACETEX) evaluate $(OUT) -o $(OUT)/eval --method $(METHOD)

bench:
	$(PYTHON) benchmarks/bench_stages.py

bench-completion:
	$(PYTHON) benchmarks/bench_completion.py

figure:
	$(PYTHON) scripts/make_readme_figure.py

face-model:
	$(PYTHON) scripts/build_face_model.py

albedo-model:
	$(PYTHON) scripts/build_albedo_model.py

# The shipped UV generator: training data (fit + unwrap + pseudo-gt of the London TRAIN people),
# 3000 steps of the small preset, then the generator alone is exported with its model card.
UNET_STEPS ?= 3000
unet-model:
	$(PYTHON) scripts/prepare_training_data.py
	$(FACETEX) train unet --data bench_out/train_london -o bench_out/models/unet_london_v2 --preset small \
		--steps $(UNET_STEPS) --batch-size 4 --uv-size 256 --view-size 128 --sample-every 250 \
		--checkpoint-every 250 --seed 0 --cpu
	$(PYTHON) scripts/export_uv_generator.py bench_out/models/unet_london_v2 stages/assets/uv_generator_london_v1

clean-out:
	rm -rf $(OUT)

# FreeUV (seed 000): appearance network first (own base: autoencoder + UNet), then the structure
# network on its frozen base. docs/DIFFUSION.md has the recipe and the numbers.
DIFF_DATA  ?= bench_out/train_london
DIFF_OUT   ?= bench_out/models
DIFF_STEPS ?= 400
DIFF_VAE_STEPS ?= 200

train-diffusion-small:
	$(FACETEX) train diffusion-appearance --data $(DIFF_DATA) -o $(DIFF_OUT)/diffusion_appearance_small \
		--preset small --vae-steps $(DIFF_VAE_STEPS) --steps $(DIFF_STEPS) --sample-every 100
	$(FACETEX) train diffusion-structure --data $(DIFF_DATA) -o $(DIFF_OUT)/diffusion_structure_small \
		--preset small --base $(DIFF_OUT)/diffusion_appearance_small --steps $(DIFF_STEPS) --sample-every 100

# Real scale (paper: batch 4, lr 3e-5, 80k steps, one A100): SD15 = a local Stable Diffusion 1.5
# diffusers folder, CLIP = a local CLIP vision model folder (data_manifests/stable_diffusion.md).
SD15  ?= models/stable-diffusion-v1-5
CLIP  ?= models/clip-vit-large-patch14
SD_DATA ?= out
SD_STEPS ?= 80000

train-diffusion-sd15:
	accelerate launch -m facetex_cli.main train diffusion-appearance --data $(SD_DATA) -o models/diffusion_appearance_sd15 \
		--preset sd15 --base $(SD15) --image-encoder $(CLIP) --steps $(SD_STEPS) --batch-size 4 --lr 3e-5 \
		--mixed-precision fp16 --sample-every 2000 --checkpoint-every 5000
	accelerate launch -m facetex_cli.main train diffusion-structure --data $(SD_DATA) -o models/diffusion_structure_sd15 \
		--preset sd15 --base $(SD15) --image-encoder $(CLIP) --steps $(SD_STEPS) --batch-size 4 --lr 3e-5 \
		--mixed-precision fp16 --sample-every 2000 --checkpoint-every 5000

bench-diffusion:
	$(PYTHON) benchmarks/bench_diffusion.py
