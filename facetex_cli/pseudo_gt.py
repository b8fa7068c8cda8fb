"""``facetex pseudo-gt``: PCA fit + Poisson blending + symmetric fill of unwraps (UV_bl of Yin et al.'s
weakly-supervised texture generation)."""

from __future__ import annotations

from pathlib import Path

import typer

from facetex_cli.batch import Done, Job, print_summary, run_batch
from facetex_cli.common import (
    EXECUTOR_OPTION,
    SCHEDULER_OPTION,
    SHARD_OPTION,
    WORKERS_OPTION,
    ExecutorChoice,
    batch_settings,
    DEBUG_OPTION,
    FACE_MODEL_OPTION,
    OUT_OPTION,
    PAPER_YIN,
    SKIP_OPTION,
    FaceModelChoice,
    artifact_folders,
    outputs_exist,
    prepare_output_root,
)
from stages.core.face_model import load_builtin_face_model
from stages.pseudo_gt import DEFAULT_LAMBDA


def pseudo_gt_command(
    unwraps: list[str] = typer.Argument(..., help="`facetex unwrap` output folders (OUT/<stem>/) or their root."),
    out: Path = OUT_OPTION,
    pca: Path = typer.Option(None, "--pca", help="PCA albedo model from `facetex build-pca`.", show_default="built in"),
    lam: float = typer.Option(DEFAULT_LAMBDA, "--lambda", min=0.0,
                              help=f"Ridge weight of the PCA fit ({PAPER_YIN}, Eq. 8)."),
    mirror: bool = typer.Option(True, "--mirror/--no-mirror", help="Fill hidden texels from seen mirror partners."),
    skip_existing: bool = SKIP_OPTION,
    face_model: FaceModelChoice = FACE_MODEL_OPTION,
    debug: bool = DEBUG_OPTION,
    workers: int = WORKERS_OPTION,
    shard: str = SHARD_OPTION,
    executor: ExecutorChoice = EXECUTOR_OPTION,
    dask_scheduler: str = SCHEDULER_OPTION,
) -> None:
    """Make the pseudo ground truth of each unwrap.

    Writes OUT/<stem>/uv_pseudo.png, uv_pseudo_provenance.png (green real, blue mirrored, orange
    model), uv_pca.png and pseudo_gt.json.
    """
    if face_model != "mediapipe":  # before any work: every PCA albedo model is built in that layout
        raise typer.BadParameter(f"pseudo-gt fits a PCA albedo model, and PCA models exist only for the mediapipe "
                                 f"UV layout (its output trains the models of that layout); `complete --method blend "
                                 f"--face-model {face_model}` gives the same fill on the {face_model} head",
                                 param_hint="--face-model")
    folders, missing = artifact_folders(unwraps, "unwrap.json")
    settings = batch_settings(workers, shard, executor, dask_scheduler)
    prepare_output_root(out, clean=not settings.shared_output)
    job = Job(pseudo_gt_job, {"out": out, "pca": pca, "lam": lam, "mirror": mirror})
    results = run_batch(folders, job, name_of=lambda p: p.name, missing=missing, description="pseudo-gt",
                        skip=(lambda p: outputs_exist(out, p.name, "pseudo_gt.json")) if skip_existing else None,
                        debug=debug, settings=settings)
    raise typer.Exit(print_summary(results, "pseudo-gt"))


def pseudo_gt_job(out: Path, pca: Path | None, lam: float, mirror: bool):
    """The per-folder function of ``pseudo-gt`` (a :class:`~facetex_cli.batch.Job` factory): the face model
    and the PCA albedo model load here, once per process."""
    from stages.completion.pca import BUILTIN_PCA, load_pca
    from stages.core.checksums import model_file_record
    from stages.pseudo_gt import pseudo_ground_truth
    from stages.unwrap import UnwrapResult

    model = load_builtin_face_model()
    albedo = load_pca(pca)
    pca_file = model_file_record(pca or BUILTIN_PCA)  # recorded in each pseudo_gt.json

    def process(folder: Path) -> Done:
        result = pseudo_ground_truth(UnwrapResult.load(folder, model), albedo, lam=lam, mirror=mirror,
                                     pca_file=pca_file)
        result.save(out / folder.name)
        i = result.info
        return Done(f"real {i['visible_fraction']:.0%}, mirrored {i['mirrored_fraction']:.0%}, "
                    f"model {i['model_fraction']:.0%}", [out / folder.name])

    return process
