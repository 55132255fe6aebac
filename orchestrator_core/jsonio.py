"""JSON for the files the core writes and reads: orjson (about 10x faster than the stdlib
encoder with indentation), indented so a person with `cat` can read the files."""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError  # a ValueError


def dumps(data: Any) -> bytes:
    """Indented JSON bytes with a trailing newline."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def loads(data: bytes | str) -> Any:
    """Parse JSON text; raises ValueError on bad input."""
    return orjson.loads(data)
