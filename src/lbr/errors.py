"""Errors that the CLI reports as one clear line instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class LBRError(Exception):
    """Base class for errors caused by the user's input or settings, not by a bug."""


class InputError(LBRError):
    """Bad input data: names the file, and where known the line and the field.

    The message reads ``path:line: field 'x': what is wrong``, so editors and terminals can
    jump to the spot.
    """

    def __init__(
        self,
        path: str | Path | None,
        message: str,
        *,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = self.path or "<input>"
        if line is not None:
            where += f":{line}"
        what = f"field '{field}': {message}" if field else message
        super().__init__(f"{where}: {what}")


class ConfigError(LBRError):
    """An invalid or inconsistent setting."""
