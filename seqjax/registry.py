"""The model families every part of seqjax can name: one registry, no name dispatch elsewhere.

A family is registered once, by name, and from then on `seqjax.Recurrent`,
`SequenceModel(name, ...)`, every experiment's `--models`, parameter matching,
the gradient-flow diagnostics and the throughput benchmark all know it:

    seqjax.register_cell("indrnn", IndRNNCell)      # make_cell(hidden_size, **options) -> cell
    seqjax.register_backbone("transformer", make)   # make(hidden_size, num_layers, *, vocab_size,
                                                    #      input_size, dropout, **options) -> backbone

A cell family (see `seqjax.recurrences.protocol.Cell`) runs as a causal stack of
`seqjax.Recurrent` layers; a backbone family builds the whole backbone itself
(see `seqjax.models.sequence_model.Backbone`). The built-in families register
themselves the same way when `seqjax` is imported: rnn, lstm, gru (in
`seqjax.recurrences.cells`) and transformer (in `seqjax.models.transformer`).

Family-specific options are the factory's keyword arguments: `SequenceModel(name,
..., options={"forget_bias": 0.0})` in Python, `--models=lstm:forget_bias=0.0` on
an experiment's command line. `check_options` refuses unknown ones by name.

This module imports nothing else of seqjax, so that any module can register.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Family:
    """A registered family: exactly one of `make_cell` and `make_backbone` is set.

    Attributes:
      name: what `--models` and `SequenceModel` call it.
      make_cell: `(hidden_size, **options) -> cell`, for a cell family.
      make_backbone: `(hidden_size, num_layers, *, vocab_size, input_size, dropout,
        **options) -> backbone`, for a family that builds its own backbone.
    """

    name: str
    make_cell: Callable[..., Any] | None = None
    make_backbone: Callable[..., Any] | None = None

    @property
    def factory(self) -> Callable[..., Any]:
        return self.make_cell if self.make_cell is not None else self.make_backbone

    def option_names(self) -> tuple[str, ...]:
        """The options the factory names: its keyword parameters, less those that
        `SequenceModel` passes itself (hidden_size, num_layers, sizes, dropout)."""
        return tuple(
            p.name
            for p in inspect.signature(self.factory).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _STRUCTURAL
        )

    def accepts(self, option: str) -> bool:
        """Whether the factory takes the keyword `option`, by name or through `**kwargs`."""
        parameters = inspect.signature(self.factory).parameters.values()
        return option in self.option_names() or any(p.kind is p.VAR_KEYWORD for p in parameters)

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raises a ValueError naming every option the factory does not take."""
        unknown = [name for name in options if name in _STRUCTURAL or not self.accepts(name)]
        if unknown:
            raise ValueError(
                f"family {self.name!r} takes no option {', '.join(map(repr, unknown))}; "
                f"its options are {', '.join(self.option_names()) or 'none'}"
            )


# Arguments that SequenceModel passes itself; they are not options.
_STRUCTURAL = ("hidden_size", "num_layers", "vocab_size", "input_size", "dropout")
_FAMILIES: dict[str, Family] = {}


def _register(family: Family, replace: bool) -> None:
    if not isinstance(family.name, str) or not family.name.isidentifier():
        raise ValueError(f"a family name must be an identifier (letters, digits, _); got {family.name!r}")
    if not callable(family.factory):
        raise TypeError(f"the factory of family {family.name!r} must be callable; got {family.factory!r}")
    if family.name in _FAMILIES and not replace:
        raise ValueError(f"family {family.name!r} is already registered; pass replace=True to replace it")
    _FAMILIES[family.name] = family


def register_cell(name: str, make_cell: Callable[..., Any], *, replace: bool = False) -> Callable[..., Any]:
    """Registers a cell family; returns `make_cell`, so it also works as a decorator.

    Args:
      name: the family's name, an identifier.
      make_cell: `(hidden_size, **options) -> cell`, e.g. the cell's class. The cell
        follows `seqjax.recurrences.protocol.Cell`.
      replace: replace an earlier family of the same name instead of raising.
    """
    _register(Family(name, make_cell=make_cell), replace)
    return make_cell


def register_backbone(
    name: str, make_backbone: Callable[..., Any], *, replace: bool = False
) -> Callable[..., Any]:
    """Registers a family that builds its whole backbone; returns `make_backbone`.

    Args:
      name: the family's name, an identifier.
      make_backbone: `(hidden_size, num_layers, *, vocab_size, input_size, dropout,
        **options) -> backbone` following `seqjax.models.sequence_model.Backbone`,
        with `hidden_size` output features per step.
      replace: replace an earlier family of the same name instead of raising.
    """
    _register(Family(name, make_backbone=make_backbone), replace)
    return make_backbone


def get(name: str) -> Family:
    """The family registered as `name`; a ValueError lists the known names otherwise."""
    try:
        return _FAMILIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model family {name!r}; registered: {', '.join(names())}") from None


def names() -> tuple[str, ...]:
    """Every registered family, in order of registration."""
    return tuple(_FAMILIES)
