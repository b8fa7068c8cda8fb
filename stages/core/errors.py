"""Errors that carry a one-line, user-facing message.

The CLI prints ``str(error)`` of these without a traceback; anything else is a bug.
"""

from __future__ import annotations

from pathlib import Path


class FacetexError(Exception):
    """Base class for expected failures (bad input, missing files, no face).

    Args:
        path: the file the problem is about (named in the message).
        reason: what is wrong, in a few words a user can act on.
    """

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class BadInputError(FacetexError):
    """The input file cannot be used (corrupt, wrong type, too small, ...)."""


class NoFaceError(FacetexError):
    """No usable face was found in the photo."""


class MissingArtifactError(FacetexError):
    """An artifact an earlier stage should have written is missing or invalid."""


class OutputError(FacetexError):
    """An output cannot be written (disk full, read-only, no permission, a file where a folder should be)."""
