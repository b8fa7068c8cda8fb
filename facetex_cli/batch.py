"""What every command shares: expanding inputs, the progress bar, per-item errors, the summary.

A batch never stops at a bad file: each item's expected failure (a
:class:`~stages.core.errors.FacetexError`) becomes one line in the summary; anything else is
reported as an internal error with its type (``--debug`` shows the traceback). The exit code is 1
if any item failed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import sys
import time
import traceback
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


@dataclass
class ItemResult:
    """Outcome of one input: ``status`` is ``ok``, ``skipped`` or ``failed``."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class InputList:
    """Expanded inputs plus the patterns that matched nothing (reported as failures)."""

    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def expand_inputs(patterns: Iterable[str], suffixes: set[str] = PHOTO_SUFFIXES) -> InputList:
    """Turn files, folders and globs into a sorted, de-duplicated list of files.

    A folder contributes its files with one of ``suffixes`` (not recursive); a glob contributes
    every match (``**`` recurses); a plain path is taken as it is, whatever its suffix, so a bad
    file named explicitly gets a proper error instead of being silently ignored.
    """
    found: dict[Path, None] = {}
    result = InputList()
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and child.suffix.lower() in suffixes:
                    found.setdefault(child, None)
        elif path.exists():
            found.setdefault(path, None)
        elif glob.has_magic(pattern):
            matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True) if Path(m).is_file())
            if not matches:
                result.missing.append(pattern)
            for match in matches:
                found.setdefault(match, None)
        else:
            result.missing.append(pattern)
    result.files = list(found)
    return result


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True) -> Iterator[None]:
    """Silence C++ libraries (MediaPipe, TFLite) that write to file descriptor 2 directly."""
    if not enabled:
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


def run_batch(items: list, process: Callable[[object], str | None], *, name_of: Callable[[object], str] = str,
              skip: Callable[[object], bool] | None = None, description: str = "working",
              debug: bool = False, missing: list[str] | None = None, quiet_native: bool = True) -> list[ItemResult]:
    """Run ``process`` on every item with a progress bar; collect one :class:`ItemResult` each.

    Args:
        items: inputs.
        process: does the work for one item; returns an optional one-line detail for the summary.
        name_of: label for an item in the summary.
        skip: returns True when an item's outputs already exist (``--skip-existing``).
        description: progress bar label.
        debug: print tracebacks of internal errors.
        missing: input patterns that matched nothing (listed as failures).
        quiet_native: silence native stderr noise while processing.
    """
    results = [ItemResult(pattern, "failed", f"{pattern}: no such file, folder or glob match")
               for pattern in missing or []]
    for result in results:
        console.print(f"[red]error[/red] {escape(result.detail)}", highlight=False, soft_wrap=True)
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
                    detail = process(item) or ""
                results.append(ItemResult(name, "ok", detail, time.perf_counter() - start))
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
                console.print(f"[red]error[/red] {escape(results[-1].detail)}", highlight=False, soft_wrap=True)
            progress.advance(task)
    return results


def print_summary(results: list[ItemResult], title: str) -> int:
    """Print a summary table (and failures); return the exit code (1 if anything failed)."""
    failed = [r for r in results if r.status == "failed"]
    # Long batches list only their failures; the counts line below covers the rest.
    shown = results if len(results) <= SUMMARY_ROWS else failed
    if (len(results) > 1 or failed) and shown:
        table = Table(title=title if shown is results else f"{title}: failures", show_lines=False)
        table.add_column("input")
        table.add_column("status")
        table.add_column("seconds", justify="right")
        table.add_column("detail", overflow="fold")
        colours = {"ok": "green", "skipped": "yellow", "failed": "red"}
        for r in shown:
            table.add_row(escape(r.name), f"[{colours[r.status]}]{r.status}[/]",
                          f"{r.seconds:.2f}" if r.seconds else "", escape(r.detail))
        console.print(table)
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    console.print(f"{title}: {counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed",
                  highlight=False)
    return 1 if failed or not results else 0
