"""Append-only JSONL result files that survive a kill: a rerun skips what is already done.

Each row is one JSON object on one line, identified by a key built from some of its fields. Rows
are appended and flushed (and fsynced) a batch at a time, so a killed run loses at most the batch
in flight. On opening, a torn last line (the process died mid-write) is cut off and its row is
simply recomputed; a corrupt line anywhere else is an error that names the file and the line, since
silently dropping it would lose a result.
"""

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from prosv_lens.errors import ResultFileError


class ResultLog:
    """Rows of one run in a JSONL file, keyed by ``key_fields``.

    Args:
        path: the file (created with its folder if missing).
        key_fields: the fields that identify a row; appending a row whose key exists is an error
            (a rerun must skip it instead: check :meth:`has`).
    """

    def __init__(self, path: str | Path, key_fields: Sequence[str]) -> None:
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = self._read()
        self._keys = {self.key(r) for r in self.rows}
        if len(self._keys) != len(self.rows):
            raise ResultFileError(f"{self.path}: duplicated rows; delete the file and rerun")

    def key(self, row: dict) -> tuple:
        missing = [f for f in self.key_fields if f not in row]
        if missing:
            raise ResultFileError(f"{self.path}: row lacks key fields {missing}: {row}")
        return tuple(json.dumps(row[f], sort_keys=True) for f in self.key_fields)

    def has(self, **fields: object) -> bool:
        """Whether a row with these key fields is already stored."""
        return self.key(fields) in self._keys

    def append(self, rows: Iterable[dict]) -> None:
        """Append rows durably (one write, flush, fsync)."""
        rows = list(rows)
        keys = [self.key(r) for r in rows]
        clash = [k for k in keys if k in self._keys]
        if clash or len(set(keys)) != len(keys):
            raise ResultFileError(f"{self.path}: rows already stored: {clash[:3]}")
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.rows.extend(rows)
        self._keys.update(keys)

    def _read(self) -> list[dict]:
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        rows = []
        for i, line in enumerate(complete, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ResultFileError(
                    f"{self.path}:{i}: not valid UTF-8 JSON ({e}): fix or delete that line and "
                    "rerun"
                ) from e
            if not isinstance(row, dict):
                raise ResultFileError(
                    f"{self.path}:{i}: a row must be a JSON object: fix or delete that line and "
                    "rerun"
                )
            rows.append(row)
        if tail.strip():  # no trailing newline: the writer died mid-line; drop the torn row
            with self.path.open("r+b") as f:
                f.truncate(len(raw) - len(tail))
        return rows
