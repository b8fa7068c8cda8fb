"""What every command shares: expanding inputs, output names, the progress bar, per-item errors, the summary.

A batch never stops at a bad file: each item's expected failure (a
:class:`~stages.core.errors.FacetexError`) becomes one line in the summary; anything else is
reported as an internal error with its type (``--debug`` shows the traceback). The exit code is 1
if any item failed.

Native libraries (MediaPipe, TFLite) write to file descriptor 2 directly. From a command's first
model load, :func:`silence_native_stderr` points fd 2 at ``/dev/null`` and gives Python's
``sys.stderr`` (and so the rich console and its progress bar) its own duplicate of the terminal's
descriptor, so the bar keeps drawing and native lines never leak. (Silencing fd 2 only around each
item, as before, also silenced the bar, which drew on fd 2: it stayed at 0/N.)
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import os
import pickle
import re
import signal
import stat
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stages.core.errors import FacetexError
from stages.core.image_io import PHOTO_SUFFIXES

console = Console(stderr=True)
#: Batches longer than this list only their failures in the summary table.
SUMMARY_ROWS = 30
#: At most this many names are listed per group of skipped files.
SKIPPED_NAMES = 5


@dataclass
class Done:
    """What ``process`` may return for an item: a one-line detail and the folders it wrote."""

    detail: str = ""
    folders: list[Path] = field(default_factory=list)
    #: One line each about a result that was written but may be wrong (e.g. a doubtful pose);
    #: printed as ``warning <input>: <line>`` as the batch goes.
    warnings: list[str] = field(default_factory=list)
    #: Anything (picklable) the command collects from each item in its process (e.g. evaluate's scores).
    value: object = None


@dataclass
class ItemResult:
    """Outcome of one input: ``status`` is ``ok``, ``skipped`` or ``failed``; ``folders`` it wrote."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0
    folders: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    value: object = None
    #: The traceback of an internal error, kept with ``--debug``.
    traceback: str = ""


@dataclass
class InputList:
    """Expanded inputs.

    Attributes:
        files: the inputs to process, in argument order.
        missing: patterns that matched nothing (reported as failures).
        rejected: ``(path, reason)`` of inputs named explicitly that cannot be read as files
            (a FIFO, a device, a symlink loop, a folder with no photos): failures.
        skipped: ``(path, reason)`` of entries of folders and globs left out (not a photo type, a
            folder named like a photo, ...): reported as warnings.
    """

    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _kind(path: Path) -> str:
    """``file``, ``dir``, ``loop`` (broken link or symlink loop), ``missing`` or the kind of a special file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "loop" if path.is_symlink() else "missing"
    except OSError:  # ELOOP, ENAMETOOLONG, EACCES on a parent
        return "loop" if path.is_symlink() else "unreadable"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


_REASONS = {"loop": "broken symlink or symlink loop", "unreadable": "cannot be read (permission or path error)",
            "FIFO": "not a regular file (a FIFO)", "socket": "not a regular file (a socket)",
            "device": "not a regular file (a device)", "dir": "a folder named like a photo, not a photo"}


def _folder_entries(folder: Path, suffixes: set[str], recursive: bool, result: InputList) -> list[Path]:
    """Photos of ``folder`` (sorted; with ``recursive`` also its subfolders', not following links);
    records what was left out in ``result.skipped``. Hidden entries (``.name``) are ignored."""
    photos = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        kind = _kind(entry)
        if kind == "dir":
            if recursive and not entry.is_symlink():
                photos.extend(_folder_entries(entry, suffixes, recursive, result))
            elif entry.suffix.lower() in suffixes:
                result.skipped.append((entry, _REASONS["dir"]))
            elif recursive:
                result.skipped.append((entry, "a symlinked folder (not followed)"))
        elif kind == "file":
            if entry.suffix.lower() in suffixes:
                photos.append(entry)
            else:
                result.skipped.append((entry, f"not a photo type ({entry.suffix.lower() or 'no suffix'})"))
        else:
            result.skipped.append((entry, _REASONS[kind]))
    return photos


def _empty_folder_reason(folder: Path, suffixes: set[str], recursive: bool) -> str:
    """Why a folder contributed nothing, with a hint."""
    subfolders = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    results = [p for p in subfolders if any((p / m).is_file() for m in ("fit.json", "unwrap.json", "complete.json"))]
    if results:
        return (f"no photos here: it holds {len(results)} facetex output folder(s) (e.g. {results[0].name}/); "
                "pass photos, or the output folders to the command that reads them")
    if not recursive:
        nested = sum(1 for sub in subfolders for p in sub.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        if nested:
            return f"no photos here, {nested} in its subfolders (add --recursive)"
    return "no photos (" + ", ".join(sorted(suffixes)) + ") in this folder"


def expand_inputs(patterns: Iterable[str], suffixes: set[str] = PHOTO_SUFFIXES, *,
                  recursive: bool = False) -> InputList:
    """Turn files, folders and globs into a de-duplicated list of files, in argument order.

    A folder contributes its files with one of ``suffixes``, sorted (with ``recursive``, also those
    of its subfolders); a glob contributes every regular file it matches (``**`` recurses); a plain
    path is taken as it is, whatever its suffix, so a bad file named explicitly gets a proper error
    instead of being silently ignored. Everything left out is listed with its reason
    (:class:`InputList`): nothing is dropped without a word.
    """
    found: dict[Path, None] = {}
    result = InputList()
    for pattern in patterns:
        path = Path(pattern)
        kind = _kind(path)
        if kind == "dir":
            photos = _folder_entries(path, suffixes, recursive, result)
            if not photos:
                result.rejected.append((pattern, _empty_folder_reason(path, suffixes, recursive)))
            for photo in photos:
                found.setdefault(photo, None)
        elif kind == "file":
            found.setdefault(path, None)
        elif kind != "missing" and not glob.has_magic(pattern):
            result.rejected.append((pattern, _REASONS[kind]))
        elif glob.has_magic(pattern):
            matches = []
            for match in sorted(Path(m) for m in glob.glob(pattern, recursive=True)):
                match_kind = _kind(match)
                if match_kind == "file":
                    matches.append(match)
                elif match_kind != "dir" or match.suffix.lower() in suffixes:
                    result.skipped.append((match, _REASONS.get(match_kind, match_kind)))
            if not matches:
                result.missing.append(pattern)
            for match in matches:
                found.setdefault(match, None)
        else:
            result.missing.append(pattern)
    result.files = list(found)
    return result


def report_skipped(skipped: list[tuple[Path, str]]) -> None:
    """One warning line per folder and reason, naming up to :data:`SKIPPED_NAMES` of the entries."""
    groups: dict[tuple[Path, str], list[str]] = defaultdict(list)
    for path, reason in skipped:
        groups[(path.parent, reason)].append(path.name)
    for (folder, reason), names in groups.items():
        shown = ", ".join(names[:SKIPPED_NAMES]) + (f" and {len(names) - SKIPPED_NAMES} more"
                                                    if len(names) > SKIPPED_NAMES else "")
        console.print(f"[yellow]skipped[/yellow] {escape(str(folder))}: {len(names)} "
                      f"{'entry' if len(names) == 1 else 'entries'}, {escape(reason)}: {escape(shown)}",
                      highlight=False, soft_wrap=True)


def output_names(files: list[Path], stem_of: Callable[[Path], str] = lambda p: p.stem) -> dict[Path, str]:
    """The output folder name of each input: its stem, unless several inputs share it.

    Inputs sharing a stem (``face.webp``, ``face.bmp``) are all named ``<stem>_<suffix>``
    (``face_webp``, ``face_bmp``); any that still collide (the same name in two folders) get
    ``_2``, ``_3``... in argument order. The same inputs always give the same names.
    """
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        by_stem[stem_of(path)].append(path)
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for stem, paths in by_stem.items():
        for path in paths:
            name = stem if len(paths) == 1 else f"{stem}_{path.suffix.lstrip('.').lower()}".rstrip("_")
            base, k = name, 1
            while name in taken or (len(paths) > 1 and name in by_stem):
                k += 1
                name = f"{base}_{k}"
            taken.add(name)
            names[path] = name
    return names


def report_renames(names: dict[Path, str], stem_of: Callable[[Path], str] = lambda p: p.stem) -> None:
    """One line per input whose output folder is not its stem (see :func:`output_names`)."""
    for path, name in names.items():
        if name != stem_of(path):
            console.print(f"note {path}: another input has the stem {stem_of(path)!r}; writing {name}/",
                          markup=False, highlight=False, soft_wrap=True)


class _Silencer:
    """State of :func:`silence_native_stderr` (one per process)."""

    active = False


def silence_native_stderr(debug: bool = False) -> None:
    """Point file descriptor 2 at ``/dev/null`` for the rest of the process, keeping Python's ``sys.stderr``
    (and so the rich console and its progress bar) on its own duplicate of the terminal.

    Called by :func:`run_batch` and :func:`facetex_cli.common.build_or_exit`, so a command is
    covered from its first model load to its exit (MediaPipe's destructors still log then). A no-op
    with ``debug`` (native logs wanted), when already done, or when ``sys.stderr`` is not fd 2
    (typer's CliRunner, pytest's capture): there :func:`quiet_native_stderr` silences each block.
    """
    if debug or _Silencer.active:
        return
    try:
        real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        real = False
    if not real:
        return
    sys.stderr.flush()
    sys.stderr = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    _Silencer.active = True


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True) -> Iterator[None]:
    """Silence C++ libraries (MediaPipe, TFLite) that write to file descriptor 2 directly, for a block.

    A no-op while :func:`silence_native_stderr` holds fd 2 for the whole command.
    """
    if not enabled or _Silencer.active:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _error_line(message: str) -> None:
    console.print(f"[red]error[/red] {escape(message)}", highlight=False, soft_wrap=True)


@dataclass(frozen=True)
class Job:
    """A batch's per-item function, built where it runs: ``factory(**kwargs)`` loads the models and returns
    ``process(item) -> str | Done | None``.

    ``factory`` is a module-level function and ``kwargs`` plain picklable values (paths, option
    dataclasses, names), so the same job is built once in this process (``--workers 1``), once in
    each pool worker, or once per Dask worker process: the models load once per process.
    """

    factory: Callable[..., Callable[[object], str | Done | None]]
    kwargs: dict = field(default_factory=dict)

    def build(self) -> Callable[[object], str | Done | None]:
        return self.factory(**self.kwargs)


@dataclass(frozen=True)
class BatchSettings:
    """How a batch runs: ``workers`` processes (1: in this process), this ``shard`` ``(index, count)``
    of the inputs (1-based index; None: all), on the ``local`` pool or a ``dask`` cluster at ``scheduler``."""

    workers: int = 1
    shard: tuple[int, int] | None = None
    executor: str = "local"
    scheduler: str | None = None

    @property
    def shared_output(self) -> bool:
        """Whether other machines may write into the same output root at the same time."""
        return self.shard is not None or self.executor == "dask"


def default_workers() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``1 <= I <= N``; None stays None.

    Raises:
        ValueError: not of that form (one line, for the CLI's ``--shard`` error).
    """
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise ValueError(f"expected I/N (e.g. 3/8: the third of 8 shards), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: I must be between 1 and N")
    return index, count


def shard_of(name: str, count: int) -> int:
    """The shard (1..count) an item whose output name is ``name`` belongs to: sha1 of the name mod ``count``.

    By name rather than by position in the sorted list, so a shard's items do not depend on the
    other inputs (photos added between array jobs, or a resumed job, never move an item to another
    shard) nor on where the shared filesystem is mounted; the output names are unique in a batch,
    so shards never write the same folder. The split is even in expectation (binomial), not exact.
    """
    return int.from_bytes(hashlib.sha1(name.encode("utf-8", "surrogateescape")).digest()[:8], "big") % count + 1


def _process_item(process: Callable[[object], str | Done | None], item, name: str, debug: bool,
                  quiet_native: bool) -> ItemResult:
    """Run ``process`` on one item and turn its outcome (or expected or unexpected error) into an
    :class:`ItemResult`; the same in this process and in a worker. ``KeyboardInterrupt`` propagates."""
    start = time.perf_counter()
    try:
        with quiet_native_stderr(quiet_native and not debug):
            outcome = process(item)
        done = outcome if isinstance(outcome, Done) else Done(outcome or "")
        return ItemResult(name, "ok", done.detail, time.perf_counter() - start, list(done.folders),
                          warnings=list(done.warnings), value=done.value)
    except FacetexError as exc:
        return ItemResult(name, "failed", str(exc), time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - one bad item must not stop the batch
        return ItemResult(name, "failed", f"internal error: {type(exc).__name__}: {exc}", time.perf_counter() - start,
                          traceback=traceback.format_exc() if debug else "")


class JobLoadError(Exception):
    """A job's models could not be loaded (in this process or a worker): one line, the batch stops (exit 2)."""


def build_job(job: Job, debug: bool = False):
    """``job.build()`` with its expected failures as :class:`JobLoadError` (native logs silenced)."""
    try:
        with quiet_native_stderr(not debug):
            return job.build()
    except FacetexError as exc:
        raise JobLoadError(str(exc)) from None


def run_batch(items: list, process: Callable[[object], str | Done | None] | Job, *,
              name_of: Callable[[object], str] = str, skip: Callable[[object], bool] | None = None,
              description: str = "working", debug: bool = False, missing: list[str] | None = None,
              quiet_native: bool = True, inputs: InputList | None = None,
              settings: BatchSettings | None = None,
              shard_key: Callable[[object], str] | None = None) -> list[ItemResult]:
    """Run ``process`` on every item with a progress bar; collect one :class:`ItemResult` each, in input order.

    Args:
        items: inputs.
        process: does the work for one item; returns an optional one-line detail for the summary,
            or a :class:`Done` that also names the folders written. A :class:`Job` (which builds
            that function) can also run in worker processes; a plain function runs here only.
        name_of: label for an item in the summary.
        skip: returns True when an item's outputs already exist (``--skip-existing``).
        description: progress bar label.
        debug: print tracebacks of internal errors.
        missing: input patterns that matched nothing (listed as failures).
        quiet_native: silence native stderr noise while processing.
        inputs: the expansion ``items`` came from: its missing and rejected inputs are failures,
            its skipped entries are reported.
        settings: workers, shard and executor (default: one process, all items).
        shard_key: what ``settings.shard`` splits by (:func:`shard_of`): the item's output folder name,
            unique in the batch (default: ``name_of``).

    With ``settings.workers > 1`` (and more than one item to do) the job runs in a pool of that
    many spawned processes (:func:`pool_results`), results still reported in input order;
    with ``executor="dask"`` on a Dask cluster. A job whose models cannot load is one error line
    and exit status 2, as before the batch.
    """
    settings = settings or BatchSettings()
    if quiet_native:
        silence_native_stderr(debug)
    failures = [(pattern, f"{pattern}: no such file, folder or glob match") for pattern in missing or []]
    if inputs is not None:
        report_skipped(inputs.skipped)
        failures += [(pattern, f"{pattern}: no such file, folder or glob match") for pattern in inputs.missing]
        failures += [(pattern, f"{pattern}: {reason}") for pattern, reason in inputs.rejected]
    results = [ItemResult(name, "failed", detail) for name, detail in failures]
    for result in results:
        _error_line(result.detail)
    if settings.shard is not None:
        index, count = settings.shard
        total = len(items)
        items = [item for item in items if shard_of((shard_key or name_of)(item), count) == index]
        console.print(f"shard {index}/{count}: {len(items)} of {total} inputs", markup=False, highlight=False)
    names = [name_of(item) for item in items]
    skipped = [skip is not None and skip(item) for item in items]
    todo = [item for item, s in zip(items, skipped, strict=True) if not s]
    workers = max(1, min(settings.workers, len(todo)))
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[current]}"), console=console,
                        transient=True, disable=not console.is_terminal)
    todo_names = [n for n, s in zip(names, skipped, strict=True) if not s]
    if settings.executor == "dask" and todo:
        outcomes = dask_results(_as_job(process), todo, todo_names, settings, debug=debug, quiet_native=quiet_native)
    elif workers > 1:
        outcomes = pool_results(_as_job(process), todo, todo_names, workers, debug=debug, quiet_native=quiet_native)
    else:
        outcomes = _local_results(process, todo, todo_names, debug=debug, quiet_native=quiet_native)
    try:
        with progress:
            task = progress.add_task(description, total=len(items), current="")
            for name, is_skipped in zip(names, skipped, strict=True):
                progress.update(task, current=name)
                if is_skipped:
                    results.append(ItemResult(name, "skipped", "outputs exist"))
                else:
                    results.append(next(outcomes))
                    _report_item(results[-1], debug)
                progress.advance(task)
    except JobLoadError as exc:
        _error_line(str(exc))
        import typer

        raise typer.Exit(2) from None
    finally:
        outcomes.close()  # stops the workers if the loop ended early (Ctrl-C, a load error)
    return results


def _as_job(process) -> Job:
    if not isinstance(process, Job):
        raise TypeError("worker processes need a Job (a module-level factory), not a plain function")
    return process


def _local_results(process, todo: list, names: list[str], *, debug: bool, quiet_native: bool) -> Iterator[ItemResult]:
    """Each item's result, in order, computed here (a :class:`Job` is built on the first item)."""
    if not todo:
        return
    if isinstance(process, Job):
        process = build_job(process, debug)
    with single_thread_blas():
        for item, name in zip(todo, names, strict=True):
            yield _process_item(process, item, name, debug, quiet_native)


# ------------------------------------------------------------------------------------- worker processes
#: Environment variables that size the thread pools of OpenMP (torch), MKL/OpenBLAS (numpy), numba and
#: TFLite's XNNPACK; set in each worker before it imports them, so N workers use N cores, not N^2 threads.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


class _Worker:
    """State of a pool worker process: its built job (or why it failed to build), whether it is working
    on an item and whether it was told to stop."""

    process: Callable | None = None
    error: str | None = None
    debug = False
    quiet_native = True
    busy = False
    stopping = False
    #: Dask workers build each job once: the pickled job of the built one.
    job_blob: bytes | None = None


def limit_threads(threads: int) -> None:
    """Size the thread pools of this process's numeric libraries to ``threads`` (env variables for those
    not yet imported; the runtime setters for torch, numba and OpenCV if already imported) and numpy's
    BLAS to one thread (:func:`single_thread_blas`)."""
    for variable in THREAD_VARIABLES:
        # Once numba is imported its NUMBA_NUM_THREADS is fixed: a changed variable makes the next
        # compilation (numba re-reads its config then) fail, after its threads started, with "Cannot set
        # NUMBA_NUM_THREADS to a different value". numba.set_num_threads below lowers it instead.
        if variable == "NUMBA_NUM_THREADS" and "numba" in sys.modules:
            continue
        os.environ[variable] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "numba" in sys.modules:
        sys.modules["numba"].set_num_threads(min(threads, sys.modules["numba"].config.NUMBA_NUM_THREADS))
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)
    single_thread_blas()


def single_thread_blas():
    """Put the BLAS libraries loaded in this process (numpy's OpenBLAS) on one thread; as a context, until
    its end. Every executor runs batch items so: BLAS least squares change in the last bits with the
    thread count (a fit's rms), and a batch must write the same bytes whatever ``--workers`` or the
    machine's cores; BLAS threads barely help the small solves of one photo anyway."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _on_sigint(signum, frame) -> None:
    """A worker's SIGINT (Ctrl-C reaches the whole process group; the parent forwards it otherwise): stop
    taking items; interrupt the current one (its staged folder is removed by the ``finally`` that owns
    it) and ignore further signals so that cleanup is not interrupted in turn."""
    _Worker.stopping = True
    if _Worker.busy:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt


def _init_worker(blob: bytes, threads: int, debug: bool, quiet_native: bool) -> None:
    """Pool initializer: limit threads, silence native stderr, then unpickle and build the job once.

    The job arrives pickled (``blob``) so that unpickling it, which imports the command's modules and
    with them torch and numba, happens after the thread variables are set. A build failure is kept
    and reported by the first item this worker gets."""
    signal.signal(signal.SIGINT, _on_sigint)
    limit_threads(threads)
    _Worker.debug, _Worker.quiet_native = debug, quiet_native
    if quiet_native:
        silence_native_stderr(debug)
    try:
        _Worker.process = build_job(pickle.loads(blob), debug)
        limit_threads(threads)  # libraries that ignore the variables (OpenCV) or read them at import
    except JobLoadError as exc:
        _Worker.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported as the job's load error, not a crash of the pool
        _Worker.error = f"internal error while loading: {type(exc).__name__}: {exc}"


def _work(item, name: str) -> ItemResult:
    """One item in a pool worker."""
    if _Worker.error is not None:
        raise JobLoadError(_Worker.error)
    if _Worker.stopping:
        raise KeyboardInterrupt
    _Worker.busy = True
    try:
        return _process_item(_Worker.process, item, name, _Worker.debug, _Worker.quiet_native)
    finally:
        _Worker.busy = False


def stop_pool(executor, futures: list) -> None:
    """Stop a pool after Ctrl-C: cancel the items not started, interrupt the running ones (SIGINT to each
    worker: their staged folders are removed, nothing half-written stays) and wait for the workers to exit."""
    for future in futures:
        future.cancel()
    for pid in list(getattr(executor, "_processes", {}) or {}):  # the pool's own worker processes
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGINT)
    executor.shutdown(wait=True, cancel_futures=True)


def pool_results(job: Job, todo: list, names: list[str], workers: int, *, debug: bool,
                 quiet_native: bool) -> Iterator[ItemResult]:
    """Each item's result in input order, computed by ``workers`` spawned processes that each build
    ``job`` once (``spawn``: MediaPipe/TFLite and torch threads do not survive ``fork``). Workers
    run one thread each. Ctrl-C: :func:`stop_pool`, then ``KeyboardInterrupt`` as in one process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    blob = pickle.dumps(job)
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(blob, 1, debug, quiet_native))
    futures = []
    try:
        futures = [executor.submit(_work, item, name) for item, name in zip(todo, names, strict=True)]
        for future, name in zip(futures, names, strict=True):
            try:
                yield future.result()
            except BrokenProcessPool as exc:
                yield ItemResult(name, "failed", f"internal error: a worker process died ({exc})")
    except BaseException:
        stop_pool(executor, futures)
        raise
    executor.shutdown(wait=True)


def dask_results(job: Job, todo: list, names: list[str], settings: BatchSettings, *, debug: bool,
                 quiet_native: bool) -> Iterator[ItemResult]:
    """Each item's result in input order, computed on a Dask cluster (``pip install 'facetex[dask]'``):
    the scheduler at ``settings.scheduler``, or, without one, a local cluster of ``settings.workers``
    processes started here. Each Dask worker process builds the job once (:func:`_dask_work`); the
    cluster's workers need facetex installed and the inputs and output folder on a shared filesystem."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise JobLoadError("--executor dask needs the Dask extra: pip install 'facetex[dask]'") from None
    cluster = None
    if settings.scheduler is None:
        cluster = LocalCluster(n_workers=settings.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    try:
        client = Client(cluster if cluster is not None else settings.scheduler, timeout="30s")
    except OSError as exc:
        raise JobLoadError(f"{settings.scheduler}: cannot reach the Dask scheduler ({exc})") from None
    blob = pickle.dumps(job)
    futures = []
    try:
        # pure=False: every item runs (no result caching by argument hash); the blob is scattered once.
        blob_future = client.scatter(blob, broadcast=True)
        futures = [client.submit(_dask_work, blob_future, item, name, debug, quiet_native, pure=False)
                   for item, name in zip(todo, names, strict=True)]
        for future in futures:
            yield future.result()
    finally:
        client.cancel(futures)
        client.close()
        if cluster is not None:
            cluster.close()


def _dask_work(blob: bytes, item, name: str, debug: bool, quiet_native: bool) -> ItemResult:
    """One item on a Dask worker: the job is built on the worker's first item (and again only if another
    batch sends another job); threads are limited to one, as in a pool worker."""
    if _Worker.job_blob != blob:
        limit_threads(1)
        _Worker.process, _Worker.error, _Worker.job_blob = None, None, blob
        try:
            _Worker.process = build_job(pickle.loads(blob), debug)
        except JobLoadError as exc:
            _Worker.error = str(exc)
        limit_threads(1)
    if _Worker.error is not None:
        raise JobLoadError(_Worker.error)
    return _process_item(_Worker.process, item, name, debug, quiet_native)


def _report_item(result: ItemResult, debug: bool) -> None:
    """The lines one finished item prints as the batch goes: its warnings, or its error."""
    for line in result.warnings:
        console.print(f"[yellow]warning[/yellow] {escape(result.name)}: {escape(line)}", highlight=False,
                      soft_wrap=True)
    if result.status == "failed":
        if debug and result.traceback:
            console.print(result.traceback, markup=False, highlight=False, soft_wrap=True)
        _error_line(result.detail)


def print_summary(results: list[ItemResult], title: str) -> int:
    """Print a summary table (and failures), the folders written; return the exit code (1 if anything failed).

    The counts line also counts output folders, which differ from inputs with ``--face all``.
    """
    failed = [r for r in results if r.status == "failed"]
    # Long batches list only their failures; the counts line below covers the rest.
    shown = results if len(results) <= SUMMARY_ROWS else failed
    if (len(results) > 1 or failed) and shown:
        table = Table(title=title if shown is results else f"{title}: failures", show_lines=False)
        table.add_column("input")
        table.add_column("status")
        table.add_column("seconds", justify="right")
        table.add_column("output", overflow="fold")
        table.add_column("detail", overflow="fold")
        colours = {"ok": "green", "skipped": "yellow", "failed": "red"}
        for r in shown:
            table.add_row(escape(r.name), f"[{colours[r.status]}]{r.status}[/]",
                          f"{r.seconds:.2f}" if r.seconds else "", escape(", ".join(map(str, r.folders))),
                          escape(r.detail))
        console.print(table)
    elif len(results) == 1 and results[0].status == "ok":
        r = results[0]
        for folder in r.folders:
            console.print(f"wrote {folder}", markup=False, highlight=False, soft_wrap=True)
        if r.detail:
            console.print(f"{r.name}: {r.detail}", markup=False, highlight=False, soft_wrap=True)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    folders = sum(len(r.folders) for r in results)
    written = f"; {folders} output folder{'s' if folders != 1 else ''} written" if folders else ""
    console.print(f"{title}: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed{written}",
                  highlight=False, markup=False)
    return 1 if failed or not results else 0
