"""A validating jsonl reader shared by every loader (corpus, pairs, BEIR files)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lbr.errors import InputError

DEFAULT_MAX_LINE_BYTES = 1_000_000


def iter_jsonl(
    path: str | Path,
    *,
    required: dict[str, type | tuple[type, ...]] | None = None,
    optional: dict[str, type | tuple[type, ...]] | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    allow_empty: bool = False,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for each non-blank line of a jsonl file.

    Blank lines are skipped and a UTF-8 byte-order mark on the first line is accepted.
    Every problem raises :class:`InputError` naming the file, the 1-based line and the field.

    Args:
        path: the jsonl file.
        required: field name -> accepted type(s); a missing field or a wrong type is an error.
        optional: field name -> accepted type(s), checked only when present and not null.
        max_line_bytes: longer lines are rejected (protects memory against a broken file).
        allow_empty: if False, a file with no records is an error.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.is_dir():
        raise InputError(path, "is a directory, expected a .jsonl file")
    required = required or {}
    optional = optional or {}
    count = 0
    for line_number, text in iter_text_lines(path, max_line_bytes=max_line_bytes):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            hint = " (truncated last line?)" if not text.endswith("\n") else ""
            raise InputError(path, f"malformed JSON: {err.msg} at column {err.colno}{hint}", line=line_number) from None
        if not isinstance(record, dict):
            raise InputError(
                path,
                f"expected a JSON object, got {type(record).__name__}",
                line=line_number,
            )
        for field, types in required.items():
            if field not in record or record[field] is None:
                raise InputError(path, "missing", line=line_number, field=field)
            _check_type(path, line_number, field, record[field], types)
        for field, types in optional.items():
            if record.get(field) is not None:
                _check_type(path, line_number, field, record[field], types)
        count += 1
        yield line_number, record
    if count == 0 and not allow_empty:
        raise InputError(path, "file is empty (no records)")


def iter_text_lines(path: str | Path, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every line of a UTF-8 text file, newline kept.

    Shared by the jsonl, TSV and plain-text readers: a line over ``max_line_bytes`` or with a
    bad byte is an :class:`InputError` naming the file and the 1-based line; a UTF-8 byte-order
    mark on the first line is dropped.
    """
    path = Path(path)
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            if len(raw) > max_line_bytes:
                raise InputError(
                    path,
                    f"line is {len(raw):,} bytes, over the cap of {max_line_bytes:,} (raise it with --max-line-bytes)",
                    line=line_number,
                )
            if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield line_number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(path, f"invalid UTF-8 at byte {err.start}", line=line_number) from None


def _check_type(path: Path, line: int, field: str, value: Any, types: Any) -> None:
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
        names = " or ".join(t.__name__ for t in _as_tuple(types))
        raise InputError(path, f"expected {names}, got {type(value).__name__}", line=line, field=field)


def _as_tuple(types: Any) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write records atomically (temporary file, then rename), one JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
