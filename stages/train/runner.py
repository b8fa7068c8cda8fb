"""The one training runner every ``facetex train ...`` model plugs into.

A learned method supplies its dataset, its networks and optimisers, and one function per phase
that takes a batch, optimises (through :meth:`TrainingRunner.optimise`) and returns its losses (plus,
optionally, a sample sheet to draw); the runner owns the rest:

- Hugging Face accelerate (CPU, one GPU, or many GPUs/nodes under ``accelerate launch``; mixed
  precision), ``--device`` (:func:`stages.models.device.resolve_device`);
- seeding (``accelerate.utils.set_seed`` before any network is built) and a seeded shuffling
  DataLoader with ``num_workers`` worker processes (datasets must be picklable and seed each sample
  from ``(seed, epoch, index)``, so the worker count does not change the data);
- the step counters of one or more phases (e.g. the autoencoder, then the diffusion steps), the
  epoch number handed to ``dataset.set_epoch``;
- ``training_state/`` checkpoints every ``checkpoint_every`` steps and at the end (weights,
  optimisers, RNGs, plus ``step.json``: the counters and any :attr:`TrainingRunner.state` values)
  and resuming from them: a resumed run restarts the interrupted epoch's data order, so it is close
  to, not bit-identical with, an uninterrupted one;
- the wall-clock limit ``time_limit`` (seconds from the runner's creation, so the method's data loading
  counts): when it has passed, no further step starts; the phases not reached still get their
  ``start()`` (so values derived there exist) and the model folder is written as usual;
- sample sheets ``samples/step_NNNNNN.png`` every ``sample_every`` steps, ``train_log.jsonl`` every
  ``log_every`` steps, and ``progress(step, total, losses)`` after every step (the CLI's rich bar).

The model folder itself is written by the method (``stages.models.folder.save_pretrained`` or the
diffusion folder), on the main process, from :meth:`TrainingRunner.finish`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.core.atomic import write_json
from stages.core.image_io import save_png

#: What a model folder keeps from training when ``save_pretrained`` rewrites it.
RUN_FILES = ("samples", "training_state", "train_log.jsonl")


def run_field(default, help: str, **cli):
    """A config dataclass field with its CLI help (and typer option settings such as ``min``) next to it.

    ``facetex_cli.common.config_options`` builds each ``facetex train`` option from these, so a
    default exists once.
    """
    return field(default=default, metadata={"help": help, "cli": cli})


@dataclass
class RunConfig:
    """The settings every training run has (each model's config dataclass extends it and may change
    the defaults by redeclaring a field; the help text is looked up along the class hierarchy)."""

    steps: int = run_field(2000, "Training steps.", min=1)
    batch_size: int = run_field(4, "Samples per step.", min=1)
    seed: int = run_field(0, "Seed of initialisation and sampling (same seed, same run).")
    sample_every: int = run_field(200, "Write a sample sheet every N steps (0: never).", min=0)
    checkpoint_every: int = run_field(500, "Checkpoint (training_state/) every N steps (0: only at the end).",
                                      min=0)
    log_every: int = run_field(25, "Append the losses to train_log.jsonl every N steps (0: never).", min=0)
    time_limit: float = run_field(0.0, "Stop after this many wall-clock seconds from the run's start, data loading "
                                       "included (0: no limit); the model folder is written with the steps done.",
                                  min=0.0)


@dataclass
class StepOutput:
    """What a phase's step function returns: its losses (tensors or floats) and, optionally, a
    function drawing a sample sheet (``(H, W, 3)`` float image in [0, 1]), called only when one is due."""

    losses: dict[str, Any]
    sheet: Callable[[], np.ndarray] | None = None


@dataclass
class Phase:
    """``steps`` optimisation steps counted under ``key`` in ``step.json``; ``step(batch, i)`` runs step
    ``i`` (0-based, within the phase); ``start()`` runs when the phase begins (also on a resume that
    lands in or after it, e.g. to set train modes or derive a value from the trained autoencoder)."""

    key: str
    steps: int
    step: Callable[[dict, int], StepOutput]
    start: Callable[[], None] | None = None


def sample_sheet(columns: list[torch.Tensor], rows: int = 4) -> np.ndarray:
    """``(rows * S, len(columns) * S, 3)`` image: one column per ``(B, >=3, ., .)`` tensor in [0, 1] (first
    3 channels, bilinearly resized to the first one's size), one row per sample."""
    size = columns[0].shape[-2:]

    def hwc(t: torch.Tensor) -> np.ndarray:
        t = t.detach().float().cpu()[:3]
        if t.shape[-2:] != size:
            t = torch.nn.functional.interpolate(t[None], size=size, mode="bilinear", align_corners=False)[0]
        return t.clamp(0, 1).permute(1, 2, 0).numpy()

    lines = [np.concatenate([hwc(column[i]) for column in columns], axis=1)
             for i in range(min(rows, columns[0].shape[0]))]
    return np.concatenate(lines, axis=0)


class TrainingRunner:
    """One training run writing into ``out_dir``; see the module docstring.

    Args:
        out_dir: the model folder (``training_state/``, ``samples/``, ``train_log.jsonl`` go there).
        config: the run's :class:`RunConfig` (or a subclass).
        device: ``auto|cpu|cuda|cuda:N`` (under ``accelerate launch``: leave ``auto``).
        num_workers: DataLoader worker processes.
        resume: continue from ``out_dir/training_state`` when it exists.
        mixed_precision: accelerate's ``no``, ``fp16`` or ``bf16``.
        progress: ``progress(step, total, losses)`` after every step (steps counted over all phases).
    """

    def __init__(self, out_dir: Path, config: RunConfig, *, device: str | None = "auto", num_workers: int = 0,
                 resume: bool = True, mixed_precision: str = "no",
                 progress: Callable[[int, int, dict], None] | None = None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from stages.models.device import DeviceError, resolve_device

        self.out_dir = Path(out_dir)
        self.config = config
        self.num_workers = int(num_workers)
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.resume = resume
        self.progress = progress
        wanted = resolve_device(device)
        explicit = (device or "auto").strip().lower() != "auto"
        if wanted.type == "cuda" and wanted.index is not None:
            torch.cuda.set_device(wanted)
        self.accelerator = Accelerator(cpu=wanted.type == "cpu", mixed_precision=mixed_precision)
        got = self.accelerator.device
        if explicit and (got.type != wanted.type or (wanted.index is not None and got.index != wanted.index)):
            raise DeviceError(None, f"--device {device}: accelerate placed this process on {got} "
                                    "(under `accelerate launch` leave --device auto)")
        set_seed(config.seed)
        self.created = time.perf_counter()   # the time limit counts from here
        self.time_limited = False            # True once run() stopped at config.time_limit
        self.state: dict[str, Any] = {}   # extra values saved in step.json and restored on resume
        self.counters: dict[str, int] = {}
        self.last: dict[str, float] = {}
        self._loader = None
        self._dataset = None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def state_dir(self) -> Path:
        return self.out_dir / "training_state"

    def loader(self, dataset, *, shuffle: bool = True, collate_fn=None):
        """The run's DataLoader over ``dataset`` (``batch_size`` of the config, seeded shuffling, last
        partial batch dropped, ``num_workers`` workers), not yet prepared. Workers are not persistent:
        each epoch's workers start after ``set_epoch`` and so see the new epoch number."""
        self._dataset = dataset
        self._loader = torch.utils.data.DataLoader(
            dataset, batch_size=self.config.batch_size, shuffle=shuffle, drop_last=True, collate_fn=collate_fn,
            generator=torch.Generator().manual_seed(self.config.seed), num_workers=self.num_workers)
        return self._loader

    def prepare(self, *objects):
        """``accelerator.prepare`` (networks, optimisers and the loader of :meth:`loader`, in any order)."""
        prepared = self.accelerator.prepare(*objects)
        prepared = prepared if isinstance(prepared, tuple) else (prepared,)
        for before, after in zip(objects, prepared, strict=True):
            if before is self._loader:
                self._loader = after
        return prepared if len(prepared) > 1 else prepared[0]

    def optimise(self, loss: torch.Tensor, optimizer, clip: tuple[list, float] | None = None) -> None:
        """One optimiser step on ``loss``: zero the grads, backward (accelerate), optional gradient norm
        clipping ``(parameters, max_norm)``, step."""
        optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if clip is not None and self.accelerator.sync_gradients:
            self.accelerator.clip_grad_norm_(*clip)
        optimizer.step()

    def unwrap(self, module):
        return self.accelerator.unwrap_model(module)

    def next_batch(self) -> dict:
        return next(self._batches)

    def _cycle(self, epoch: int) -> Iterator[dict]:
        while True:
            if hasattr(self._dataset, "set_epoch"):
                self._dataset.set_epoch(epoch)   # before iter(): worker processes get the dataset pickled then
            yield from self._loader
            epoch += 1

    def checkpoint(self) -> None:
        """Save the accelerate state (networks, optimisers, RNGs) and ``step.json`` (counters + state)."""
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(self.state_dir))
        if self.is_main:
            write_json(self.state_dir / "step.json", {**self.counters, **self.state})

    def _past(self, deadline: float) -> bool:
        """Whether ``deadline`` has passed: the main process decides for all, so every process stops at
        the same step (a process stepping alone would wait forever in the gradient all-reduce)."""
        if deadline == float("inf"):
            return False
        past = time.perf_counter() >= deadline
        if self.accelerator.num_processes > 1:
            from accelerate.utils import broadcast

            past = bool(broadcast(torch.tensor([int(past)], device=self.device))[0])
        return past

    def run(self, phases: list[Phase]) -> dict[str, int]:
        """Run (or resume) the phases in order; returns the step counter of each phase."""
        if self._loader is None:
            raise RuntimeError("TrainingRunner.loader() must be called before run()")
        self.counters = {phase.key: 0 for phase in phases}
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        step_file = self.state_dir / "step.json"
        if self.resume and step_file.is_file():
            self.accelerator.load_state(str(self.state_dir))
            saved = json.loads(step_file.read_text())
            for key in self.counters:
                self.counters[key] = int(saved.get(key, 0))
            self.state.update({k: v for k, v in saved.items() if k not in self.counters})
        total = sum(phase.steps for phase in phases)
        done = sum(self.counters.values())
        self._batches = self._cycle(done // max(1, len(self._loader)))   # resume restarts the interrupted epoch
        self.started = time.perf_counter()
        config, offset = self.config, 0
        deadline = self.created + config.time_limit if config.time_limit and config.time_limit > 0 else float("inf")
        for phase in phases:
            if phase.start is not None:
                phase.start()
            while self.counters[phase.key] < phase.steps:
                if self._past(deadline):
                    self.time_limited = True
                    break
                out = phase.step(self.next_batch(), self.counters[phase.key])
                self.counters[phase.key] += 1
                step = self.counters[phase.key]
                self.last = {name: float(value.detach() if torch.is_tensor(value) else value)
                             for name, value in out.losses.items()}
                if self.progress is not None:
                    self.progress(offset + step, total, self.last)
                if self.is_main and config.log_every and step % config.log_every == 0:
                    with open(self.out_dir / "train_log.jsonl", "a") as log:
                        log.write(json.dumps({phase.key: step, **{k: round(v, 5) for k, v in self.last.items()}})
                                  + "\n")
                if self.is_main and out.sheet is not None and config.sample_every and step % config.sample_every == 0:
                    save_png(self.out_dir / "samples" / f"step_{step:06d}.png", out.sheet())
                if config.checkpoint_every and step % config.checkpoint_every == 0:
                    self.checkpoint()
            offset += phase.steps
        self.seconds = time.perf_counter() - self.started
        return dict(self.counters)

    def finish(self, save: Callable[[], None]) -> None:
        """The final checkpoint, then ``save()`` (writes the model folder) on the main process only."""
        self.checkpoint()
        if self.is_main:
            save()
