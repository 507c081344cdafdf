"""Argument checks shared by every public boundary: each error names the argument,
what it must be, and what was given."""

from __future__ import annotations

import enum
from typing import Any


def as_enum(enum_type: type[enum.Enum], value: Any, name: str) -> Any:
    """Returns `value` as a member of `enum_type`, or raises a ValueError naming `name`."""
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in enum_type)
        raise ValueError(f"{name} must be one of {choices}; got {value!r}") from None


def check_positive_int(value: Any, name: str) -> None:
    """Raises a ValueError unless `value` is an int >= 1 (bools are refused)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
