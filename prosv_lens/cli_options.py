"""Command-line options made from config dataclasses: each field is the one source of its option.

A config field describes its own option in its metadata, next to its default::

    epochs: int = field(default=12, metadata={"help": "training epochs", "min": 1})
    judge: str = field(default="offline", metadata={"help": "the judge", "choices": JUDGES})

:func:`add_options` turns chosen fields into ``argparse`` options: the flag is the field name
(``n_train`` -> ``--n-train``), the value parser comes from the field's type (``int``, ``float``
and ``str``, optional or not; ``bool`` is a ``store_true`` switch) and its ``"min"``, the choices
come from the field's ``"choices"`` (or, for a ``Literal[...]`` type, :func:`typing.get_args`),
and the help text is the field's ``"help"`` followed by its default. :func:`option_values` reads
the parsed values back, ready to build the config.

Choice fields of the package's configs are typed ``str`` with ``"choices"`` metadata rather than
``Literal[...]``: the test suite type-checks every dataclass at run time (jaxtyping + beartype),
where a ``Literal`` would turn the config's own one-line ``ConfigError`` for a bad value into a
type-check error.

Metadata keys of a field:

* ``"help"`` (required): what the setting does, one phrase.
* ``"choices"``: the values a ``str`` field accepts (the config's own tuple of names).
* ``"min"``: the smallest value the command line accepts (``int`` and ``float`` fields); the
  config's own checks may be stricter and report the rest.
* ``"default_help"``: how ``--help`` describes the default when its value says too little
  (``None`` meaning "40% of the depth", a default that depends on the device, ...).

A command either shows the config's defaults as the options' defaults, or (``merge=True``)
leaves unset options ``None`` so that only given values override a preset.
"""

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, get_args, get_origin, get_type_hints

__all__ = [
    "add_options",
    "field_default",
    "field_help",
    "finite_float",
    "non_negative_float",
    "non_negative_int",
    "option_values",
    "positive_float",
    "positive_int",
]


def finite_float(text: str) -> float:
    """A command-line float that is neither NaN nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _float_at_least(low: float, *, strict: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = finite_float(text)
        if value < low or (strict and value == low):
            bound = f"> {low:g}" if strict else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"expected a number {bound}, got {text!r}")
        return value

    return parse


positive_float = _float_at_least(0.0, strict=True)
"""A command-line finite float above 0 (memory sizes, rates)."""
non_negative_float = _float_at_least(0.0, strict=False)
"""A command-line finite float of at least 0 (tolerances)."""


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1)
"""A command-line count of at least 1 (epochs, batch sizes, token counts)."""
non_negative_int = _int_at_least(0)
"""A command-line count or index of at least 0 (layers, ids, ``--show``)."""


def _field(config: type, name: str) -> dataclasses.Field:
    for f in dataclasses.fields(config):
        if f.name == name:
            return f
    raise KeyError(f"{config.__name__} has no field {name!r}")


def field_help(config: type, name: str) -> str:
    """The ``"help"`` metadata of a config field (a KeyError names a field without one)."""
    text = _field(config, name).metadata.get("help")
    if not isinstance(text, str) or not text.strip():
        raise KeyError(f"{config.__name__}.{name} has no 'help' metadata")
    return text


def field_default(config: type, name: str) -> Any:
    """A config field's default (``dataclasses.MISSING`` for a required field)."""
    f = _field(config, name)
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _value_type(hint: Any) -> Any:
    """``hint`` without ``None`` (``int | None`` -> ``int``)."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _parser_of(config: type, name: str, hint: Any) -> dict[str, Any]:
    """The ``add_argument`` keywords that parse a value of the field's type."""
    kind = _value_type(hint)
    low = _field(config, name).metadata.get("min")
    choices = _field(config, name).metadata.get("choices")
    if choices is not None:
        return {"choices": list(choices)}
    if get_origin(kind) is Literal:
        return {"choices": list(get_args(kind))}
    if kind is bool:
        return {"action": "store_true"}
    if kind is int:
        if low is None:
            return {"type": int}
        return {"type": _int_at_least(int(low))}
    if kind is float:
        if low is None:
            return {"type": finite_float}
        return {"type": _float_at_least(float(low), strict=False)}
    if kind is str:
        return {}
    raise TypeError(f"{config.__name__}.{name}: no command-line parser for type {hint!r}")


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_options(
    parser: argparse._ActionsContainer,
    config: type,
    names: Iterable[str],
    *,
    merge: bool = False,
    flags: Mapping[str, Sequence[str]] | None = None,
    default_help: Mapping[str, str] | None = None,
) -> list[argparse.Action]:
    """Add an option for each named field of the dataclass ``config`` to ``parser`` (a parser
    or an argument group); returns the new actions, in the order of ``names``.

    Args:
        parser: where the options go.
        config: the dataclass whose fields the options set (each option's ``dest`` is the field
            name, so :func:`option_values` finds it).
        names: the fields to expose.
        merge: ``True`` where the command merges the given options over a preset: every option
            defaults to ``None`` ("the config's own value"); ``False``: each option defaults to
            the field's default, and a field without one is a required option.
        flags: flags other than ``--field-name`` for some fields (``{"n_concepts": ["--concepts"]}``).
        default_help: how ``--help`` describes some defaults, instead of the field's
            ``"default_help"`` metadata or its default value (e.g. "the preset's").
    """
    hints = get_type_hints(config)
    actions = []
    for name in names:
        default = field_default(config, name)
        words = (default_help or {}).get(name) or _field(config, name).metadata.get("default_help")
        if words is None and default is not dataclasses.MISSING and default is not None:
            words = None if isinstance(default, bool) else _show(default)
        text = field_help(config, name) + (f" (default: {words})" if words else "")
        kwargs = _parser_of(config, name, hints[name])
        if merge:
            kwargs["default"] = None
        elif default is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        option_flags = (flags or {}).get(name) or ["--" + name.replace("_", "-")]
        actions.append(
            parser.add_argument(*option_flags, dest=name, help=text.replace("%", "%%"), **kwargs)
        )
    return actions


def option_values(
    args: argparse.Namespace, names: Iterable[str], *, merge: bool = False
) -> dict[str, Any]:
    """The parsed values of the named options, by field name; with ``merge``, only the options
    given on the command line (those that are not ``None``)."""
    values = {name: getattr(args, name) for name in names}
    return {k: v for k, v in values.items() if v is not None} if merge else values
