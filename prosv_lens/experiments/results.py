"""Typed saved results of the experiment runners: frozen dataclasses written and read as JSON.

Every JSON result an experiment runner saves (a sweep's ``sweep.json``, a work unit's
``result.json``, a demo's results) is a frozen dataclass deriving from :class:`JsonResult`, in
the one style of :class:`prosv_lens.analysis.results.SavedResult`: fields are JSON values,
tuples (read back from JSON lists) or nested dataclasses, and the file carries
``format_version``. :meth:`JsonResult.load` checks every field's type with ``dacite`` and turns
any mismatch into one :class:`~prosv_lens.errors.ResultFileError` naming the file and field, so
readers use attributes, never string keys. A file without ``format_version`` was written before
typed results and reads as version 1 (the layout did not change).
"""

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import dacite

from prosv_lens.errors import ResultFileError
from prosv_lens.safe_io import read_json, write_json

R = TypeVar("R", bound="JsonResult")

_CONFIG = dacite.Config(
    cast=[tuple],  # JSON lists -> tuple fields
    # JSON writes 2.0 as 2.0 but a hand-written file may say 2; anything else is left for the
    # type check, which names the field
    type_hooks={float: lambda v: float(v) if type(v) is int else v},
    strict=True,  # an unknown field is an error, not silently dropped
)


@dataclasses.dataclass(frozen=True)
class JsonResult:
    """Base of typed JSON results: :meth:`save`/:meth:`load` round-trip every field.

    Subclasses set ``FORMAT_VERSION`` (bump it when a field changes meaning) and ``WHAT`` (the
    words an error uses for the file, e.g. ``"a sweep result (sweep.json)"``).
    """

    FORMAT_VERSION: ClassVar[int] = 1
    WHAT: ClassVar[str] = "a saved result"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object :meth:`save` writes: every field, then ``format_version``."""
        return {**dataclasses.asdict(self), "format_version": self.FORMAT_VERSION}

    @classmethod
    def from_dict(cls: type[R], data: Any, *, source: str | Path = "the result") -> R:
        """The result held in ``data`` (a parsed JSON object).

        Raises:
            ResultFileError: ``data`` is not an object, has another format version, or a field
                is missing, unknown or of the wrong type (named with its dotted path).
        """
        fix = "rerun the experiment into a new folder, or move the file away"
        if not isinstance(data, dict):
            raise ResultFileError(f"{source} is not {cls.WHAT} (a JSON object): {fix}")
        fields = dict(data)
        version = fields.pop("format_version", 1)
        if version != cls.FORMAT_VERSION:
            raise ResultFileError(
                f"{source} has format version {version!r}; this prosv-lens reads "
                f"{cls.__name__} version {cls.FORMAT_VERSION}: {fix}"
            )
        try:
            return dacite.from_dict(cls, fields, config=_CONFIG)
        except (dacite.DaciteError, TypeError, ValueError) as e:
            raise ResultFileError(f"{source} is not {cls.WHAT}: {e}: {fix}") from e

    def save(self, path: str | Path) -> Path:
        """Write the result atomically to ``path`` (a ``.json`` file); returns the path."""
        write_json(Path(path), self.to_dict())
        return Path(path)

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Read a result written by :meth:`save`.

        Raises:
            ResultFileError: the file is missing, corrupt, or not this kind of result.
        """
        return cls.from_dict(read_json(Path(path), missing_ok=False), source=path)
