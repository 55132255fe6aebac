"""How times and durations read on the pages: UTC timestamps, relative ages, short durations."""

from __future__ import annotations

import re
from datetime import datetime

from orchestrator_core.status import parse_iso, utc_now


def duration(seconds: float | None) -> str:
    """`0.4 s`, `12 s`, `3 min 04 s`, `2 h 05 min`; an empty string for None."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def timestamp(text: str | None) -> str:
    """An ISO time as `2026-11-25 22:13:17 UTC`; empty for None or junk."""
    ts = parse_iso(text)
    return ts.strftime("%Y-%m-%d %H:%M:%S UTC") if ts else ""


def age(text: str | None, now: datetime | None = None) -> str:
    """How long ago: `just now`, `5 min ago`, `3 h ago`, `2 days ago`; empty for None."""
    ts = parse_iso(text)
    if ts is None:
        return ""
    seconds = ((now or utc_now()) - ts).total_seconds()
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{round(seconds / 60)} min ago"
    if seconds < 86400:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"


def when(text: str | None, now: datetime | None = None) -> str:
    """`2026-11-25 22:13:17 UTC (5 min ago)`; empty for None."""
    stamp = timestamp(text)
    return f"{stamp} ({age(text, now)})" if stamp else ""


_MARKDOWN_PUNCTUATION = set("\\`*_{}[]()#+-.!|<>~$:=\"'&%^@/?;,")


def plain(text: object) -> str:
    """Text from data, YAML or settings made safe inside Markdown (a caption, a warning):
    every ASCII punctuation character is backslash-escaped, so it shows as itself."""
    return "".join("\\" + ch if ch in _MARKDOWN_PUNCTUATION else ch for ch in str(text))


def code(text: object) -> str:
    """Text as a Markdown code span that no backtick inside it can break out of."""
    text = str(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
