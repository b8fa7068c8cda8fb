# facetex — install, test, and the per-image pipeline.
#
#   make install                          install facetex (torch 2.13.0 pinned by constraints.txt;
#                                         TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build)
#   make test                             the default test suite (CPU, a few minutes)
#   make test-all                         the default suite plus the tests marked slow
#   make pipeline PHOTOS=dir OUT=dir -j2  fit -> unwrap -> complete for every photo in PHOTOS;
#                                         only missing or stale artifacts (or changed settings) are recomputed
#   make pipeline-batch PHOTOS=dir OUT=dir  the same, each stage run once over its out-of-date photos with
#                                         the worker pool (WORKERS=N, default all cores) instead of one process
#                                         per photo per stage
#   make renders  PHOTOS=dir OUT=dir      + novel views, turntable.gif for every completed photo
#   make pseudo-gt PHOTOS=dir OUT=dir     fit -> unwrap -> seed 001's pseudo ground truth per photo
#   make pca-model PHOTOS=dir OUT=dir     build-pca over every unwrap -> OUT/albedo_pca.h5
#   make train-unet PHOTOS=dir OUT=dir    pseudo-gt, then train the UV generator -> OUT/models/unet
#   make evaluate PHOTOS=dir OUT=dir      the pipeline, then metrics.json/.csv + report.html -> OUT/eval
#   make chain    PHOTOS=dir OUT=dir      every stage: fit, unwrap, pseudo-gt, build-pca, train, complete
#                                         (--method unet with the trained model, or METHOD=), render, evaluate
#   make demo                             facetex complete on skimage's astronaut -> facetex_out/astronaut/
#   make bench                            per-stage timings (benchmarks/bench_stages.py)
#   make bench-completion                 every completion method on the hidden-texel benchmark
#   make face-model                       rebuild the built-in face model asset from ../shared
#   make albedo-model                     rebuild the shipped PCA albedo model from the London training people
#   make unet-model                       retrain the shipped UV generator on the London training people (CPU, ~1 h)
#   make train-diffusion-small            FreeUV's two networks, small from-scratch preset, on bench_out/train_london (CPU)
#   make train-diffusion-sd15 SD15=dir    the same at real scale on a GPU with accelerate (SD 1.5 base, SD_DATA=dir)
#   make gpu-train BUDGET=8m              every learned model within a time budget on a GPU, benchmarked (docs/GPU.md)
#   make bench-diffusion                  seconds per 512^2 texture of --method diffusion (benchmarks/bench_diffusion.py)
#
# Pipeline settings (each reaches only its own stage):
#   METHOD=mirror  UV_SIZE=512  PCA_UV_SIZE=128  FIT_FLAGS  UNWRAP_FLAGS  PSEUDO_GT_FLAGS  BUILD_PCA_FLAGS
#   TRAIN_FLAGS  COMPLETE_FLAGS  RENDER_FLAGS  EVALUATE_FLAGS  EVAL_METHOD  UNET_MODEL  PCA_MODEL
#   WORKERS=N (pipeline-batch: worker processes per stage)
#   FACETEX=cmd    the facetex command (default: `facetex` when on PATH, else `$(PYTHON) -m facetex_cli.main`)

PYTHON   ?= python3
ifeq ($(origin FACETEX),undefined)
FACETEX := $(if $(shell command -v facetex 2>/dev/null),facetex,$(PYTHON) -m facetex_cli.main)
endif
PHOTOS   ?= ../shared/faces/london/neutral
OUT      ?= out
UV_SIZE  ?= 512
# UV side of the PCA model build-pca learns.
PCA_UV_SIZE ?= 128
# Empty TORCH_INDEX: torch from the default index (on Linux x86_64 that is the CUDA build).
TORCH_INDEX ?=

# `make chain` completes with the generator (and PCA model) it trains itself, unless told otherwise.
ifneq ($(filter chain,$(MAKECMDGOALS)),)
METHOD      ?= unet
UNET_MODEL  ?= $(OUT)/models/unet
PCA_MODEL   ?= $(OUT)/albedo_pca.h5
endif
METHOD      ?= mirror
# Empty: evaluate's hidden-texel benchmark reruns the method (and model file) each complete.json
# records; a method name overrides it for every folder.
EVAL_METHOD ?=
# Empty: complete uses the built-in model of METHOD.
UNET_MODEL  ?=
PCA_MODEL   ?=
FIT_FLAGS       ?=
UNWRAP_FLAGS    ?=
PSEUDO_GT_FLAGS ?=
BUILD_PCA_FLAGS ?=
TRAIN_FLAGS     ?= --preset small --steps 2000 --batch-size 4 --uv-size 256 --seed 0
COMPLETE_FLAGS  ?=
RENDER_FLAGS    ?=
EVALUATE_FLAGS  ?=
# pipeline-batch: worker processes of each stage's batch (empty: facetex's default, all cores).
WORKERS         ?=
ifdef FACETEX_FLAGS
$(error FACETEX_FLAGS is gone: use the per-stage FIT_FLAGS, UNWRAP_FLAGS, ..., EVALUATE_FLAGS)
endif

PHOTO_EXTS  := .jpg .jpeg .png .JPG .JPEG .PNG
PHOTO_FILES := $(sort $(foreach e,$(PHOTO_EXTS),$(wildcard $(PHOTOS)/*$(e))))
STEMS       := $(basename $(notdir $(PHOTO_FILES)))
STEM_DIRS   := $(STEMS:%=$(OUT)/%)
COMPLETED   := $(STEMS:%=$(OUT)/%/complete.json)
PSEUDO_GTS  := $(STEMS:%=$(OUT)/%/pseudo_gt.json)
TURNTABLES  := $(STEMS:%=$(OUT)/%/turntable.gif)
UNWRAPS     := $(STEMS:%=$(OUT)/%/unwrap.json)
OWN_UNET    := $(OUT)/models/unet
OWN_PCA     := $(OUT)/albedo_pca.h5

# What each stage is run with. The options complete gets from the model variables, and the
# model files it then needs (built by the rules below when they are this Makefile's own).
COMPLETE_MODEL_OPTS := $(if $(filter unet,$(METHOD)),$(if $(UNET_MODEL),--model $(UNET_MODEL))) \
                       $(if $(filter pca blend,$(METHOD)),$(if $(PCA_MODEL),--pca $(PCA_MODEL)))
COMPLETE_MODEL_DEPS := $(if $(filter unet,$(METHOD)),$(if $(UNET_MODEL),$(UNET_MODEL)/config.json)) \
                       $(if $(filter pca blend,$(METHOD)),$(PCA_MODEL))
SET_fit       := $(FIT_FLAGS)
SET_unwrap    := --uv-size $(UV_SIZE) $(UNWRAP_FLAGS)
SET_pseudo_gt := $(PSEUDO_GT_FLAGS)
SET_build_pca := --uv-size $(PCA_UV_SIZE) $(BUILD_PCA_FLAGS) data: $(STEMS)
SET_train     := $(TRAIN_FLAGS) data: $(STEMS)
SET_complete  := --method $(METHOD) --uv-size $(UV_SIZE) $(strip $(COMPLETE_MODEL_OPTS)) $(COMPLETE_FLAGS)
SET_render    := $(RENDER_FLAGS)
SET_evaluate  := $(if $(EVAL_METHOD),--method $(EVAL_METHOD)) $(EVALUATE_FLAGS) data: $(STEMS)
STAGES := fit unwrap pseudo_gt build_pca train complete render evaluate

# Settings stamps: OUT/.settings/<stage> holds the stage's settings and is a prerequisite of
# everything the stage writes, so changing a setting recomputes that stage and what follows it.
# A stamp is rewritten only when its text differs (compared here, at parse time, so `make -n`
# tells the truth and a dry run writes nothing).
SETTINGS := $(OUT)/.settings
quote = '$(subst ','\'',$(strip $(1)))'
stamp_differs = $(shell printf '%s\n' $(call quote,$(SET_$(1))) | cmp -s - $(SETTINGS)/$(1) || echo yes)
define stamp_rule
$(SETTINGS)/$(1): $(if $(call stamp_differs,$(1)),FORCE)
	@mkdir -p $$(@D) && printf '%s\n' $(call quote,$(SET_$(1))) > $$@
endef
$(foreach s,$(STAGES),$(eval $(call stamp_rule,$(s))))
FORCE:

# pipeline-batch: the per-photo rules of fit, unwrap and complete below decide what is out of date as
# for `pipeline`, but only list the photo in $(BATCH_DIR)/<stage> (`+`: also under `make -n`, so a dry
# run prints the real batch commands); the pipeline-batch recipe, expanded after them, then runs each
# stage once over its list. The lists are cleared at parse time and at the end (a dry run leaves nothing).
BATCH_DIR := $(OUT)/.batch
ifneq ($(filter pipeline-batch,$(MAKECMDGOALS)),)
ifneq ($(filter-out pipeline-batch,$(MAKECMDGOALS)),)
$(error pipeline-batch runs alone (its stages run after make has listed them); run the other goals after it)
endif
BATCH := 1
$(shell rm -rf $(BATCH_DIR))
endif
batch_list = $(strip $(file <$(BATCH_DIR)/$(1)))
BATCH_FLAGS := $(if $(WORKERS),--workers $(WORKERS))

.PHONY: install test test-all lint pipeline pipeline-batch renders pseudo-gt pca-model train-unet evaluate chain demo bench
.PHONY: bench-completion figure face-model albedo-model unet-model clean-out help FORCE
.PHONY: train-diffusion-small train-diffusion-sd15 bench-diffusion
.DELETE_ON_ERROR:
# Keep the intermediate artifacts: they are outputs people look at, not temporaries.
.SECONDARY:
.SECONDEXPANSION:

help:
	@sed -n '3,/^$$/p' Makefile | sed -n 's/^# \{0,1\}//p'

install:
	$(PYTHON) -m pip install -c constraints.txt torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PYTHON) -m pip install -c constraints.txt -e ".[dev,diffusion,dask]"

test:
	$(PYTHON) -m pytest -q -n 2

test-all:
	$(PYTHON) -m pytest -q -n 2 -m "slow or not slow"

lint:
	ruff check stages facetex_cli tests benchmarks scripts

pipeline: $(COMPLETED)
	@echo "pipeline: $(words $(COMPLETED)) photos -> $(OUT)/"

# Each stage once over what the rules listed; a stage's failures (one line each) do not stop the
# next stage for the other photos, and make fails at the end if any stage failed.
pipeline-batch: $(COMPLETED)
	$(if $(call batch_list,fit),$(FACETEX) fit $(call batch_list,fit) -o $(OUT) $(SET_fit) $(BATCH_FLAGS) || touch $(BATCH_DIR)/failed)
	$(if $(call batch_list,unwrap),$(FACETEX) unwrap $(call batch_list,unwrap) $(OUT) -o $(OUT) $(SET_unwrap) $(BATCH_FLAGS) || touch $(BATCH_DIR)/failed)
	$(if $(call batch_list,complete),$(FACETEX) complete $(call batch_list,complete) -o $(OUT) $(SET_complete) $(BATCH_FLAGS) || touch $(BATCH_DIR)/failed)
	+@failed=$$(test -e $(BATCH_DIR)/failed && echo yes); rm -rf $(BATCH_DIR); rmdir $(OUT) 2>/dev/null; \
	if [ -n "$$failed" ]; then echo "pipeline-batch: some photos failed (see above)"; exit 1; fi; \
	echo "pipeline-batch: $(words $(COMPLETED)) photos -> $(OUT)/"

renders: $(TURNTABLES)

pseudo-gt: $(PSEUDO_GTS)

pca-model: $(OWN_PCA)

train-unet: $(OWN_UNET)/config.json

evaluate: $(OUT)/eval/metrics.json

chain: $(PSEUDO_GTS) $(OWN_PCA) $(OWN_UNET)/config.json $(TURNTABLES) $(OUT)/eval/metrics.json
	@echo "chain: $(words $(STEMS)) photos, complete --method $(METHOD) -> $(OUT)/"

# The photo of a stem (whatever its extension).
# A stem without a photo names a missing $(PHOTOS)/<stem>.jpg, so make says what it cannot find.
photo_of = $(or $(firstword $(filter $(addprefix $(PHOTOS)/$(1),$(PHOTO_EXTS)),$(PHOTO_FILES))),$(PHOTOS)/$(1).jpg)

$(OUT)/%/fit.json: $$(call photo_of,$$*) $(SETTINGS)/fit
ifdef BATCH
	+@mkdir -p $(BATCH_DIR) && printf '%s\n' "$<" >> $(BATCH_DIR)/fit
else
	$(FACETEX) fit "$<" -o $(OUT) $(SET_fit)
endif

# unwrap: needs the photo (for colours) and its fit.
$(OUT)/%/unwrap.json: $$(call photo_of,$$*) $(OUT)/%/fit.json $(SETTINGS)/unwrap
ifdef BATCH
	+@mkdir -p $(BATCH_DIR) && printf '%s\n' "$<" >> $(BATCH_DIR)/unwrap
else
	$(FACETEX) unwrap "$<" "$(OUT)/$*/fit.json" -o $(OUT) $(SET_unwrap)
endif

# pseudo-gt: seed 001's pseudo ground truth (PCA fit + mirror) of one unwrap.
$(OUT)/%/pseudo_gt.json: $(OUT)/%/unwrap.json $(SETTINGS)/pseudo_gt
	$(FACETEX) pseudo-gt "$(OUT)/$*" -o $(OUT) $(SET_pseudo_gt)

# build-pca: an albedo PCA model from every photo's unwrap.
$(OWN_PCA): $(UNWRAPS) $(SETTINGS)/build_pca
	$(FACETEX) build-pca $(STEM_DIRS) -o $@ --uv-size $(PCA_UV_SIZE) $(BUILD_PCA_FLAGS)

# train: the UV generator from every photo's unwrap and pseudo-GT, from scratch (config.json is
# written last, so an interrupted run is retrained).
$(OWN_UNET)/config.json: $(PSEUDO_GTS) $(SETTINGS)/train
	$(FACETEX) train unet $(addprefix --data ,$(STEM_DIRS)) -o $(OWN_UNET) --no-resume $(TRAIN_FLAGS)

# complete: fill the unwrap folder, export textured.obj/.mtl/.glb and previews.
$(OUT)/%/complete.json: $(OUT)/%/unwrap.json $(COMPLETE_MODEL_DEPS) $(SETTINGS)/complete
ifdef BATCH
	+@mkdir -p $(BATCH_DIR) && printf '%s\n' "$(OUT)/$*" >> $(BATCH_DIR)/complete
else
	$(FACETEX) complete "$(OUT)/$*" -o $(OUT) $(SET_complete)
endif

# render: novel views, turntable, textured mesh of the completed texture.
$(OUT)/%/turntable.gif: $(OUT)/%/complete.json $(SETTINGS)/render
	$(FACETEX) render "$(OUT)/$*/uv_complete.png" "$(OUT)/$*/fit.json" -o $(OUT) $(SET_render)

$(OUT)/eval/metrics.json: $(COMPLETED) $(SETTINGS)/evaluate
	$(FACETEX) evaluate $(STEM_DIRS) -o $(OUT)/eval $(if $(EVAL_METHOD),--method $(EVAL_METHOD)) $(EVALUATE_FLAGS)

demo:
	$(PYTHON) -c "from PIL import Image; from skimage import data; import os; os.makedirs('facetex_out', exist_ok=True); Image.fromarray(data.astronaut()).save('facetex_out/astronaut.png')"
	$(FACETEX) complete facetex_out/astronaut.png -o facetex_out

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
		--checkpoint-every 250 --seed 0 --device cpu
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

# Every learned model within one time budget on a GPU machine (CPU: the tiny presets), exported with
# model cards, benchmarked, summarised in GPU_OUT/summary.md (docs/GPU.md: the device command).
BUDGET   ?= 8m
GPU_DATA ?= ../shared/faces/london
GPU_OUT  ?= gpu_out
.PHONY: gpu-train
gpu-train:
	$(PYTHON) scripts/gpu_train.py --budget $(BUDGET) --data $(GPU_DATA) --out $(GPU_OUT) $(GPU_FLAGS)

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
