"""Text helpers for what users read: one-line errors, short parameter summaries, clock times."""

from __future__ import annotations

from typing import Any


def one_line(exc: BaseException, *, limit: int = 500, typed: bool = True) -> str:
    """`Type: message` (just the message when not `typed`) on one line, white space folded, cut at `limit`."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return (f"{type(exc).__name__}: {text}" if typed else text)[:limit]


def count(n: int, noun: str) -> str:
    """`1 epoch`, `10 epochs`: a number and its noun, plural unless one."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def summarize(values: dict[str, Any], *, width: int = 70) -> str:
    """A short one-line parameter summary for progress output."""
    parts = []
    for key, value in values.items():
        if isinstance(value, float):
            value = f"{value:.2g}" if (abs(value) < 1e-2 or abs(value) >= 1e4) and value != 0 else f"{value:.3g}"
        parts.append(f"{key}={value}")
    text = " ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"
