"""Saving and loading analysis results: one ``.json`` (metadata) plus one ``.npz`` (arrays).

Every analysis returns a frozen dataclass deriving from :class:`SavedResult`. Its fields are
either numpy arrays (written to the ``.npz``, bit-exact) or JSON values: numbers, strings,
booleans, ``None`` and (nested) tuples of them (written to the ``.json``; JSON lists are read back
as tuples). Plotting code needs only these files, never a model.
"""

import dataclasses
import json
import zipfile
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from prosv_lens.errors import ResultFileError
from prosv_lens.safe_io import atomic_write, parse_json_text, read_text_file, write_text

FORMAT_VERSION = 1
R = TypeVar("R", bound="SavedResult")


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _paths(path: str | Path) -> tuple[Path, Path]:
    base = Path(path)
    if base.suffix in (".json", ".npz"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".npz")


@dataclasses.dataclass(frozen=True, eq=False)
class SavedResult:
    """Base of analysis results: :meth:`save` and :meth:`load` round-trip every field exactly.

    Dataclass equality is off (numpy arrays do not compare to one bool); use :meth:`same_as`.
    """

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.json`` and ``<path>.npz`` (a ``.json``/``.npz`` suffix is dropped first).

        Returns:
            The two files written.
        """
        json_path, npz_path = _paths(path)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        arrays, meta = {}, {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
            else:
                meta[f.name] = value
        header = {"kind": type(self).__name__, "format_version": FORMAT_VERSION, "fields": meta}
        # Arrays first, then the header that describes them; each file written atomically.
        atomic_write(npz_path, lambda tmp: _savez(tmp, arrays))
        write_text(json_path, json.dumps(header, indent=1, allow_nan=True))
        return json_path, npz_path

    @classmethod
    def load(cls: type[R], path: str | Path) -> R:
        """Read a result written by :meth:`save` (pass the same ``path``).

        Raises:
            ResultFileError: a file is missing, or it holds another kind of result or version.
        """
        json_path, npz_path = _paths(path)
        if not json_path.exists() or not npz_path.exists():
            raise ResultFileError(
                f"{json_path} and {npz_path} must both exist: save the result with .save(path) "
                "and load it with the same path."
            )
        fix = "recompute the analysis (prosv analyse) or move the file away"
        text = read_text_file(json_path, what="a saved analysis result", error=ResultFileError)
        header = parse_json_text(text, json_path, fix=fix, error=ResultFileError)
        if not isinstance(header, dict) or not isinstance(header.get("fields"), dict):
            raise ResultFileError(f"{json_path} is not a saved analysis result: {fix}")
        if header.get("kind") != cls.__name__:
            raise ResultFileError(
                f"{json_path} holds a {header.get('kind')!r}, not a {cls.__name__}: load it with "
                f"{header.get('kind')}.load()."
            )
        if header.get("format_version") != FORMAT_VERSION:
            raise ResultFileError(
                f"{json_path} has format version {header.get('format_version')}, this prosv-lens "
                f"reads version {FORMAT_VERSION}: recompute the analysis."
            )
        kwargs = {k: _tuples(v) for k, v in header["fields"].items()}
        try:
            with np.load(npz_path, allow_pickle=False) as data:
                kwargs.update({k: data[k] for k in data.files})
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            # numpy's own message (e.g. "contains pickled data") would suggest unsafe loading
            raise ResultFileError(
                f"{npz_path} is not a readable .npz array file ({type(e).__name__}); it may be "
                f"truncated or corrupt: {fix}"
            ) from e
        try:
            return cls(**kwargs)
        except TypeError as e:  # fields missing or unknown: written by another version
            raise ResultFileError(f"{json_path} does not match {cls.__name__} ({e}): {fix}") from e

    def same_as(self, other: object) -> bool:
        """Field-by-field equality; arrays must match in dtype, shape and values (NaN == NaN)."""
        if type(other) is not type(self):
            return False
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if not (
                    isinstance(a, np.ndarray)
                    and isinstance(b, np.ndarray)
                    and a.dtype == b.dtype
                    and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
                ):
                    return False
            elif a != b:
                return False
        return True


def _savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    # numpy's stub types ``**kwds`` next to its own ``allow_pickle: bool`` keyword, so a ``**``
    # dict of arrays cannot be told apart from it; the names here are dataclass field names,
    # never ``allow_pickle``, hence the Any-valued view.
    named: dict[str, Any] = arrays
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **named)
