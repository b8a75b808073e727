"""A value read from a metrics document, and how it is written: one function per kind of value.

- `number`: a finite float, or None (missing, null, NaN, a string, a boolean): what every reader
  of metrics.json or a status entry takes a value as.
- `is_int`: an int that is not a boolean (epochs, counts).
- `fixed`: a number with a fixed number of decimals for tables, logs and cells ('0.612'), with
  what to show when there is none (DASH by default; the engine's log lines say 'n/a').
- `in_words`: a number for a sentence: up to 4 decimals with trailing zeros dropped, so 0.6499
  never reads as 0.650 and 0.05 stays 0.05.
- `scientific`: a small quantity such as a learning rate ('1.0e-04').

Torch-free and NumPy-free, at the top of engine/ because every layer reads values: the run directory,
the verdicts and the report, the engine's log lines, and lenstui's cells.
"""

from __future__ import annotations

import math
from typing import Any

DASH = "–"   # no value yet: tables, cells and sentences alike


def number(value: Any) -> float | None:
    """`value` as a finite float, or None (missing, null, NaN, a string, a boolean)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def is_int(value: Any) -> bool:
    """Whether `value` is an int and not a boolean (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def fixed(value: Any, digits: int = 3, missing: str = DASH) -> str:
    """`value` with `digits` decimals, or `missing` when it is not a number."""
    v = number(value)
    return missing if v is None else f"{v:.{digits}f}"


def in_words(value: Any) -> str:
    """A value for a sentence: up to 4 decimals, so 0.6499 never reads as 0.650; DASH when None."""
    v = number(value)
    if v is None:
        return DASH
    whole, _, decimals = f"{v:.4f}".partition(".")
    return f"{whole}.{decimals.rstrip('0').ljust(2, '0')}"


def scientific(value: Any, digits: int = 1, missing: str = DASH) -> str:
    """`value` in scientific form with `digits` decimals ('1.0e-04'), or `missing`."""
    v = number(value)
    return missing if v is None else f"{v:.{digits}e}"
