"""Grids of parameter values written as text, as the command line takes them.

A grid is one of three forms:

- a single number, ``0.5``;
- a comma-separated list, ``0.1,0.5,0.9`` (kept in the order given);
- ``start:stop:num``, ``num`` points evenly spaced from ``start`` to ``stop``
  with both ends included, as :func:`numpy.linspace` makes them. ``num`` is an
  integer ``>= 1``; ``num = 1`` gives ``[start]``.

Every value must be finite. The parser does not check the domain of the
parameter, so the function that uses the grid must check, for example, that
``mu`` lies in ``[0, 1]``.
"""

from __future__ import annotations

import math

import numpy as np

from ._errors import GridError

__all__ = ["parse_grid", "MAX_GRID_POINTS", "GRID_FORMS"]

#: Largest number of points ``start:stop:num`` may request. It guards against a
#: typing slip such as ``0:1:2000000000`` allocating gigabytes.
MAX_GRID_POINTS = 1_000_000

#: The accepted forms, as error messages and help text quote them.
GRID_FORMS = "a number '0.5', a comma-separated list '0.1,0.5,0.9', or 'start:stop:num' (num >= 1 points, both ends included)"


def _invalid(text: str, reason: str) -> GridError:
    return GridError(f"invalid grid {text!r}: {reason}. Write {GRID_FORMS}.")


def _parse_value(item: str, text: str) -> float:
    stripped = item.strip()
    if not stripped:
        raise _invalid(text, "empty value")
    try:
        value = float(stripped)
    except ValueError:
        raise _invalid(text, f"{stripped!r} is not a number") from None
    if not math.isfinite(value):
        raise _invalid(text, f"{stripped!r} is not finite")
    return value


def _parse_count(item: str, text: str) -> int:
    stripped = item.strip()
    try:
        count = int(stripped)
    except ValueError:
        raise _invalid(text, f"the number of points {stripped!r} is not an integer") from None
    if count < 1:
        raise _invalid(text, f"the number of points must be >= 1, got {count}")
    if count > MAX_GRID_POINTS:
        raise _invalid(text, f"the number of points {count} is above the maximum {MAX_GRID_POINTS}")
    return count


def parse_grid(text: str) -> np.ndarray:
    """Parse a grid written as ``0.5``, ``0.1,0.5,0.9`` or ``start:stop:num``.

    Parameters
    ----------
    text:
        The grid text. White space around values is ignored.

    Returns
    -------
    numpy.ndarray
        Float array of shape ``(n,)`` with ``n >= 1``, in the order the text
        gives (``start`` first for the range form).

    Raises
    ------
    GridError
        For text in none of the three forms, a value that is not a finite
        number, or a point count that is not an integer in
        ``[1, MAX_GRID_POINTS]``. The message quotes the text and the
        accepted forms.
    """
    if not isinstance(text, str):
        raise GridError(f"grid must be a string, got {type(text).__name__} {text!r}. Write {GRID_FORMS}.")
    if not text.strip():
        raise _invalid(text, "empty text")

    has_colon = ":" in text
    has_comma = "," in text
    if has_colon and has_comma:
        raise _invalid(text, "mixes ',' and ':'")

    # Range form: start:stop:num, inclusive at both ends like numpy.linspace.
    if has_colon:
        parts = text.split(":")
        if len(parts) != 3:
            raise _invalid(text, f"the range form needs exactly three fields start:stop:num, got {len(parts)}")
        start = _parse_value(parts[0], text)
        stop = _parse_value(parts[1], text)
        count = _parse_count(parts[2], text)
        if count == 1 and start != stop:
            # linspace would return start alone and silently drop the stop value.
            raise _invalid(text, f"one point cannot include both ends {start:g} and {stop:g}; use num >= 2, or a single value")
        with np.errstate(over="ignore", invalid="ignore"):
            grid = np.linspace(start, stop, count)

        # Finite ends near the float limit can still overflow the step.
        if not np.all(np.isfinite(grid)):
            raise _invalid(text, "the spacing (stop - start) / (num - 1) overflows")
        return grid

    # List form, or a single number (a list of one).
    values = [_parse_value(item, text) for item in text.split(",")]
    return np.asarray(values, dtype=float)
