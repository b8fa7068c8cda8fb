"""Checksums that identify the files a result was made with (models, PCA files, photos)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_sha256(path: str | Path) -> str:
    """Checksum of a model: :func:`file_sha256` of a file; of a folder, the sha256 of the lines
    ``<relative path>\\t<file sha256>\\n`` of every file in it (recursively, sorted by path)."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such model file or folder")
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f"{f.relative_to(p).as_posix()}\t{file_sha256(f)}\n".encode())
    return h.hexdigest()


def model_file_record(path: str | Path) -> dict:
    """``{"path": absolute path, "sha256": model_sha256}``: how a completion records a model it loaded
    (``complete.json["completion"]["model_files"][option]``), so ``evaluate`` can rebuild it exactly."""
    p = Path(path).resolve()
    return {"path": str(p), "sha256": model_sha256(p)}
