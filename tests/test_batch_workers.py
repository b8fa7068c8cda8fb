"""The batch runner's worker pool, shards and Dask executor: the same results as one process, in input
order; a bad file never stops the others; Ctrl-C leaves nothing half-written; shards split exactly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from facetex_cli.batch import (
    BatchSettings,
    Done,
    Job,
    _Worker,
    _work,
    parse_shard,
    run_batch,
    shard_of,
)
from stages.core.atomic import staged_folder
from stages.core.errors import BadInputError
from tests.conftest import REPO



def invoke(*args: str):
    """``facetex ARGS`` in this process (imported here: pool workers import this module for its toy job,
    and should not pay for the whole CLI)."""
    from typer.testing import CliRunner

    from facetex_cli.main import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


# ------------------------------------------------------------------------------------------ a toy job
BUILDS = []


def toy_job(fail_load: bool = False):
    """A job whose 'model' records the process that built it; items: ``bad`` fails with a one-line error,
    ``crash`` with an internal error, ``slow:<s>`` sleeps, anything else echoes."""
    if fail_load:
        raise BadInputError("model.bin", "not a model file")
    BUILDS.append(os.getpid())
    built_by = os.getpid()

    def process(item: str) -> Done:
        if item == "bad":
            raise BadInputError(item, "not a photo")
        if item == "crash":
            raise ZeroDivisionError("division by zero")
        if item.startswith("slow:"):
            time.sleep(float(item[5:]))
        return Done(f"{item} in {os.getpid()}", value=(os.getpid(), built_by, len(BUILDS)))

    return process


def test_pool_results_in_input_order_and_bad_items_do_not_stop_others():
    # The first item is slow, so later ones finish first: the results still come in input order.
    items = ["slow:1.0", "a", "bad", "b", "crash", "c", "d"]
    results = run_batch(items, Job(toy_job), quiet_native=False, settings=BatchSettings(workers=2))
    assert [r.name for r in results] == items
    assert [r.status for r in results] == ["ok", "ok", "failed", "ok", "failed", "ok", "ok"]
    assert results[2].detail == "bad: not a photo"
    assert results[4].detail == "internal error: ZeroDivisionError: division by zero"
    ok = [r for r in results if r.status == "ok"]
    pids = {r.value[0] for r in ok}
    assert os.getpid() not in pids and len(pids) == 2          # two worker processes did the work
    assert all(pid == built_by and builds == 1 for pid, built_by, builds in (r.value for r in ok))  # built once each
    assert all(r.detail.startswith(r.name) for r in ok)


def test_one_item_runs_in_this_process():
    results = run_batch(["a"], Job(toy_job), quiet_native=False, settings=BatchSettings(workers=4))
    assert results[0].value[0] == os.getpid()


def test_a_job_that_cannot_load_is_one_line_and_exit_2(capsys):
    import typer

    for workers in (1, 2):
        with pytest.raises(typer.Exit) as exc:
            run_batch(["a", "b", "c"], Job(toy_job, {"fail_load": True}), quiet_native=False,
                      settings=BatchSettings(workers=workers))
        assert exc.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.count("model.bin: not a model file") == 2 and "Traceback" not in err


def test_plain_functions_are_refused_for_a_pool():
    with pytest.raises(TypeError, match="Job"):
        run_batch(["a", "b"], lambda item: "", quiet_native=False, settings=BatchSettings(workers=2))


def test_worker_told_to_stop_takes_no_more_items(tmp_path):
    """After a SIGINT a worker interrupts its item (the staged folder goes) and refuses the queued ones."""
    target = tmp_path / "out" / "a"
    with pytest.raises(KeyboardInterrupt), staged_folder(target) as tmp:
        (tmp / "half.png").write_bytes(b"half")
        raise KeyboardInterrupt
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []
    _Worker.process, _Worker.error, _Worker.stopping = toy_job(), None, True
    try:
        with pytest.raises(KeyboardInterrupt):
            _work("a", "a")
    finally:
        _Worker.process, _Worker.stopping = None, False


# ---------------------------------------------------------------------------------------------- shards
def test_shards_are_disjoint_and_cover():
    items = [f"photo_{i:04d}" for i in range(500)] + ["ünïcode", "with space", "a/b"]
    shards = [run_batch(items, lambda item: "", quiet_native=False, settings=BatchSettings(shard=(i, 4)))
              for i in range(1, 5)]
    names = [[r.name for r in shard] for shard in shards]
    assert sorted(sum(names, [])) == sorted(items)                    # cover, no duplicates
    assert all(len(n) > 80 for n in names)                            # roughly even (503 / 4 = 126)
    # Stable across machines and runs (sha1, not Python's salted hash): pinned values.
    assert [shard_of(n, 4) for n in ("001_03", "002_03", "003_03", "004_03", "005_03")] == [3, 1, 3, 3, 4]
    # A shard's items do not depend on the other inputs.
    first = {r.name for r in run_batch(items[:100], lambda item: "", quiet_native=False,
                                       settings=BatchSettings(shard=(1, 4)))}
    assert first == set(names[0]) & set(items[:100])


def test_shard_parsing():
    assert parse_shard("3/8") == (3, 8) and parse_shard(None) is None
    for bad in ("0/4", "5/4", "1-4", "a/b", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    result = invoke("fit", "x.jpg", "--shard", "5/4")
    assert result.exit_code == 2 and "I must be between 1 and N" in result.output


# ------------------------------------------------------------------------------------- the real commands
def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path; complete.json without its timings."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "complete.json":
                record = json.loads(data)
                record.pop("seconds")
                data = json.dumps(record, sort_keys=True).encode()
            files[str(path.relative_to(root))] = data
    return files


@pytest.mark.shared
def test_complete_with_workers_is_byte_identical(shared_faces, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("001_03.jpg", "002_03.jpg", "003_03.jpg"):
        shutil.copy(shared_faces / "london" / "neutral" / name, photos / name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        result = invoke("complete", str(photos), "-o", str(out), "--uv-size", "256", "--workers", str(workers))
        assert result.exit_code == 1, result.output                  # broken.jpg failed, the others did not
        assert "broken.jpg" in result.output and "3 ok, 0 skipped, 1 failed" in result.output
        runs[workers] = _tree(out)
    assert len(runs[1]) >= 3 * 15 and sorted(runs[1]) == sorted(runs[2])
    different = [name for name in runs[1] if runs[1][name] != runs[2][name]]
    assert different == []


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.shared
def test_ctrl_c_leaves_nothing_half_written(shared_faces, tmp_path):
    """SIGINT to the parent (as Ctrl-C, or a scheduler's cancel) while two workers complete photos."""
    photos = sorted((shared_faces / "london" / "neutral").glob("*.jpg"))[:10]
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "facetex_cli.main", "complete", *map(str, photos), "-o", str(out),
                             "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait_for(lambda: any(out.glob("*/complete.json")), 300), "no photo finished"
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, output
    finished = sorted(p.parent.name for p in out.glob("*/complete.json"))
    assert len(finished) < len(photos), "the batch ran to the end instead of stopping"
    leftovers = [p for p in out.rglob("*") if ".part" in p.name or p.name.endswith(".old")]
    assert leftovers == [], leftovers
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == finished      # every folder is whole


@pytest.mark.shared
def test_shard_option_splits_a_command(shared_faces, tmp_path):
    photos = sorted((shared_faces / "london" / "neutral").glob("*.jpg"))[:6]
    written = []
    for index in (1, 2):
        out = tmp_path / f"shard{index}"
        result = invoke("fit", *map(str, photos), "-o", str(out), "--shard", f"{index}/2",
                                     "--workers", "1", "--no-occlusion-mask")
        assert result.exit_code == 0, result.output
        assert f"shard {index}/2:" in result.output
        written.append({p.parent.name for p in out.glob("*/fit.json")})
    assert written[0].isdisjoint(written[1]) and written[0] | written[1] == {p.stem for p in photos}


@pytest.mark.shared
def test_dask_executor_on_a_local_cluster(shared_faces, tmp_path):
    pytest.importorskip("distributed")
    from distributed import LocalCluster

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("001_03.jpg", "002_03.jpg"):
        shutil.copy(shared_faces / "london" / "neutral" / name, photos / name)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    reference = invoke("fit", str(photos), "-o", str(tmp_path / "local"), "--workers", "1")
    assert reference.exit_code == 1, reference.output
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = invoke("fit", str(photos), "-o", str(tmp_path / "dask"), "--executor", "dask",
                                     "--dask-scheduler", cluster.scheduler_address)
    assert result.exit_code == 1, result.output
    assert "broken.jpg" in result.output and "2 ok, 0 skipped, 1 failed" in result.output
    local, dask = _tree(tmp_path / "local"), _tree(tmp_path / "dask")
    assert sorted(local) == sorted(dask) and len(local) >= 2 * 4
    assert [name for name in local if local[name] != dask[name]] == []


def test_dask_scheduler_needs_the_dask_executor():
    result = invoke("fit", "x.jpg", "--dask-scheduler", "tcp://nowhere:8786")
    assert result.exit_code == 2 and "--dask-scheduler goes with --executor dask" in result.output


def test_runs_sharing_the_output_with_other_machines_keep_foreign_temporaries(tmp_path):
    """A temporary whose process is not running here may belong to a job on another node: only a plain
    local run (no --shard, no dask) removes it."""
    out = tmp_path / "out"
    foreign = out / ".001_03.p4194300.k2j4h5.part"        # a process id above pid_max: not running here
    foreign.mkdir(parents=True)
    result = invoke("fit", str(tmp_path / "missing.jpg"), "-o", str(out), "--shard", "1/2")
    assert result.exit_code == 1 and foreign.is_dir()
    result = invoke("fit", str(tmp_path / "missing.jpg"), "-o", str(out))
    assert result.exit_code == 1 and not foreign.exists() and "removed 1 temporary" in result.output


def test_limit_threads_after_numba_started_keeps_compiling():
    """A worker that imported numba (and started its threads) before ``limit_threads`` must still be able
    to compile a new kernel: numba re-reads NUMBA_NUM_THREADS at every compilation and refuses a changed
    value once its threads run (a 16-bit PNG, a new dtype specialisation, failed so in a batch). Needs more
    than one CPU to mean anything (numba's default thread count must differ from 1)."""
    code = (
        "import numba, numpy as np\n"
        "numba.set_num_threads(1)\n"              # starts numba's threading layer at the default size
        "from facetex_cli.batch import limit_threads\n"
        "limit_threads(1)\n"
        "f = numba.njit(lambda a: a.sum())\n"
        "print(f(np.arange(4, dtype=np.uint16)), numba.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["6", "1"]
