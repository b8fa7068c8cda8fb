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
import io
import os
import stat
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
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


@dataclass
class ItemResult:
    """Outcome of one input: ``status`` is ``ok``, ``skipped`` or ``failed``; ``folders`` it wrote."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0
    folders: list[Path] = field(default_factory=list)


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


def run_batch(items: list, process: Callable[[object], str | Done | None], *, name_of: Callable[[object], str] = str,
              skip: Callable[[object], bool] | None = None, description: str = "working",
              debug: bool = False, missing: list[str] | None = None, quiet_native: bool = True,
              inputs: InputList | None = None) -> list[ItemResult]:
    """Run ``process`` on every item with a progress bar; collect one :class:`ItemResult` each.

    Args:
        items: inputs.
        process: does the work for one item; returns an optional one-line detail for the summary,
            or a :class:`Done` that also names the folders written.
        name_of: label for an item in the summary.
        skip: returns True when an item's outputs already exist (``--skip-existing``).
        description: progress bar label.
        debug: print tracebacks of internal errors.
        missing: input patterns that matched nothing (listed as failures).
        quiet_native: silence native stderr noise while processing.
        inputs: the expansion ``items`` came from: its missing and rejected inputs are failures,
            its skipped entries are reported.
    """
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
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[current]}"), console=console,
                        transient=True, disable=not console.is_terminal)
    with progress:
        task = progress.add_task(description, total=len(items), current="")
        for item in items:
            name = name_of(item)
            progress.update(task, current=name)
            if skip is not None and skip(item):
                results.append(ItemResult(name, "skipped", "outputs exist"))
                progress.advance(task)
                continue
            start = time.perf_counter()
            try:
                with quiet_native_stderr(quiet_native and not debug):
                    outcome = process(item)
                done = outcome if isinstance(outcome, Done) else Done(outcome or "")
                results.append(ItemResult(name, "ok", done.detail, time.perf_counter() - start, list(done.folders)))
                for line in done.warnings:
                    console.print(f"[yellow]warning[/yellow] {escape(name)}: {escape(line)}", highlight=False,
                                  soft_wrap=True)
            except FacetexError as exc:
                results.append(ItemResult(name, "failed", str(exc), time.perf_counter() - start))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad item must not stop the batch
                if debug:
                    traceback.print_exc()
                results.append(ItemResult(name, "failed", f"internal error: {type(exc).__name__}: {exc}",
                                          time.perf_counter() - start))
            if results[-1].status == "failed":
                _error_line(results[-1].detail)
            progress.advance(task)
    return results


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
