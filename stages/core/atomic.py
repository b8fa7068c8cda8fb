"""Atomic writes: an interrupted or failed run never leaves a half-written artifact or folder.

Files: every writer goes through :func:`atomic_path`: write to a temporary file in the same folder,
then ``os.replace`` it onto the final name (atomic on POSIX and Windows within one filesystem).
Folders: :func:`staged_folder` writes a whole output folder into a temporary sibling and swaps it
in at the end (:func:`swap_into_place`), so a folder never mixes the files of two runs.

Temporary names start with ``.`` and carry the writer's process id (``.<name>.p<pid>.<random>.part``);
:func:`clean_stale_temporaries` removes those whose process is gone (a killed run) on the next run.
Any ``OSError`` while writing (disk full, read-only, permission, a file where a folder should be)
becomes an :class:`~stages.core.errors.OutputError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stages.core.errors import OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)

#: Temporary names made here: ``.<name>.p<pid>.<random>.part<suffix>`` (files) or ``...part`` / ``...old`` (folders).
_TEMP_NAME = re.compile(r"^\..*\.p(\d+)\.[^.]+\.(part|old)(\.[^.]*)?$")
#: Temporaries of older versions, without a process id: ``.<name>.<random>.part<suffix>``.
_LEGACY_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.part(\.[^.]*)?$")


def io_error(path: str | Path, exc: OSError) -> OutputError:
    """An :class:`OutputError` naming ``path`` with the reason of ``exc`` (e.g. "No space left on device")."""
    return OutputError(path, f"cannot write ({exc.strerror or exc})")


def _temp_prefix(name: str) -> str:
    return f".{name}.p{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    The temporary name keeps the suffix of ``path`` so writers that choose a format from the
    suffix (Pillow, trimesh, numpy) still do the right thing.

    Raises:
        OutputError: any ``OSError`` while writing, naming ``path``.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.stem), suffix=f".part{path.suffix}", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, path)
    except OSError as exc:
        raise io_error(path, exc) from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def swap_into_place(tmp: Path, directory: Path, keep: Iterable[str] = ()) -> None:
    """Rename the folder ``tmp`` onto ``directory``.

    An existing ``directory`` is moved aside first; its entries named in ``keep`` that ``tmp`` does
    not hold move into the new folder, and the old folder is deleted. On failure the old folder is
    restored as it was.

    Raises:
        OutputError: ``directory`` exists and is not a folder.
    """
    if not directory.exists():
        os.replace(tmp, directory)
        return
    if not directory.is_dir():
        raise OutputError(directory, "exists and is not a folder")
    old = Path(tempfile.mkdtemp(prefix=_temp_prefix(directory.name), suffix=".old", dir=directory.parent))
    old.rmdir()
    os.replace(directory, old)
    moved = []
    try:
        for entry in keep:
            if (old / entry).exists() and not (tmp / entry).exists():
                os.replace(old / entry, tmp / entry)
                moved.append(entry)
        os.replace(tmp, directory)
    except BaseException:
        for entry in moved:  # put the kept entries back, then the old folder
            if (tmp / entry).exists():
                os.replace(tmp / entry, old / entry)
        if not directory.exists():
            os.replace(old, directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(directory: str | Path, keep: Iterable[str] = ()) -> Iterator[Path]:
    """Yield an empty temporary sibling of ``directory``; swap it onto ``directory`` if the block succeeds.

    ``keep`` names entries of an existing ``directory`` carried over into the new one (those the
    block did not write), e.g. the fit and unwrap files when only the completion is redone. If the
    block fails, the temporary folder is removed and ``directory`` is untouched.

    Raises:
        OutputError: any ``OSError`` while creating or swapping the folder, naming ``directory``.
    """
    directory = Path(directory)
    tmp = None
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(directory.name), suffix=".part", dir=directory.parent))
        os.chmod(tmp, 0o777 & ~_UMASK)
        yield tmp
        swap_into_place(tmp, directory, keep)
    except OSError as exc:
        raise io_error(directory, exc) from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temporaries(root: str | Path, depth: int = 1) -> list[Path]:
    """Remove temporary files and folders left by killed runs in ``root`` and its subfolders (to ``depth``).

    Only names made by this module whose process is no longer running (or legacy names without a
    process id) are removed, so a concurrent run's temporaries survive. Returns what was removed.
    """
    root = Path(root)
    removed: list[Path] = []
    folders = [root]
    for _ in range(depth + 1):
        below = []
        for folder in folders:
            try:
                entries = sorted(folder.iterdir())
            except OSError:
                continue
            for entry in entries:
                match = _TEMP_NAME.match(entry.name)
                stale = (match is not None and not _pid_alive(int(match.group(1)))) or \
                    (match is None and _LEGACY_TEMP.match(entry.name) is not None)
                if stale:
                    try:
                        if entry.is_dir() and not entry.is_symlink():
                            shutil.rmtree(entry)
                        else:
                            entry.unlink()
                        removed.append(entry)
                    except OSError:
                        pass
                elif entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
                    below.append(entry)
        folders = below
    return removed


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_npy(path: str | Path, array: np.ndarray) -> None:
    """Write one array as ``.npy``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write raw bytes, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
