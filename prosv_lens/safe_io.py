"""Writing results without losing or mixing them: atomic files, run locks, fingerprints.

Every file prosv-lens writes goes through :func:`atomic_write` (a uniquely named temporary file
in the same folder, flushed to disk, then renamed over the target), so a killed process leaves
either the old file or the new one and two processes never share a temporary name.

A folder that a run resumes from (a training checkpoint folder, a demo run, a sweep, a
reproduction) is guarded twice:

* :class:`RunLock` — one process at a time. A second run on the same folder is refused, naming
  the process that holds it. The lock is an OS file lock, released when its holder exits or is
  killed, so a crashed run never leaves a stale lock.
* :func:`check_fingerprint` — what produced the folder (model, data, settings, code version where
  it matters) is stored in it on the first run; a resume with anything else is refused with one
  line saying what differs.
"""

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from prosv_lens.errors import (
    OutputError,
    ProsvError,
    ResultFileError,
    RunLockedError,
    RunMismatchError,
)

LOCK_FILE = ".prosv.lock"
LOCK_INFO = ".prosv.lock.json"


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)`` then rename the result over ``path`` (folder created).

    Whatever ``write`` returns is ignored (``Path.write_text`` returns a count, for one).

    The temporary name is unique per call; it is removed if ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any, *, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON (sorted keys) to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=indent, sort_keys=True, default=str) + "\n")


def read_json(path: str | Path, *, missing_ok: bool = True) -> Any:
    """The JSON in ``path`` (``None`` if it does not exist and ``missing_ok``).

    Raises:
        ResultFileError: the file is not valid UTF-8 JSON or cannot be read.
    """
    path = Path(path)
    if missing_ok and not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultFileError(f"{path} is not valid JSON ({e}): delete it to redo that part") from e
    except OSError as e:
        raise ResultFileError(f"{path} cannot be read ({e.strerror or e})") from e


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type (``string``, ``number``, ``array``, ...)."""
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    names = {str: "string", int: "number", float: "number", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def read_text_file(
    path: str | Path,
    *,
    what: str,
    error: type[ProsvError] = ResultFileError,
    missing: type[ProsvError] | None = None,
) -> str:
    """The UTF-8 text of the file ``path`` (a leading byte-order mark is dropped).

    Args:
        path: the file.
        what: what the user should pass instead, for the messages (``"a JSONL file of rows"``).
        error: the error raised for a folder, an unreadable file or text that is not UTF-8.
        missing: the error raised when ``path`` does not exist (default: ``error``).

    Raises:
        ``missing`` / ``error``: one line naming the file (and for bad bytes the 1-based line).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise (missing or error)(f"{path} not found: pass {what}") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a file: pass {what}") from None
    except OSError as e:
        raise error(
            f"{path} cannot be read ({type(e).__name__}: {e.strerror or e}): check its "
            f"permissions, or pass {what}"
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise error(
            f"{path}:{line}: not UTF-8 text (byte {raw[e.start]:#04x}): save the file as UTF-8"
        ) from None


def parse_json_text(
    text: str, path: str | Path, *, fix: str, error: type[ProsvError] = ResultFileError
) -> Any:
    """One JSON document read from ``path``; ``fix`` ends the message of an empty or broken file.

    Raises:
        ``error``: ``path`` is empty, or ``PATH:LINE: not valid JSON (...)`` (1-based line).
    """
    if not text.strip():
        raise error(f"{path} is empty: {fix}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(
            f"{path}:{e.lineno}: not valid JSON ({e.msg}: column {e.colno}): {fix}"
        ) from None


def parse_jsonl_text(
    text: str, path: str | Path, *, fix: str, error: type[ProsvError] = ResultFileError
) -> list[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of a JSON-lines file.

    Line numbers are 1-based physical lines (blank lines are counted, only ``\\n`` ends a line).

    Raises:
        ``error``: the file has no non-blank line, or ``PATH:LINE: not valid JSON (...)``.
    """
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            raise error(
                f"{path}:{number}: not valid JSON ({e.msg}: column {e.colno}): {fix}"
            ) from None
    if not rows:
        raise error(f"{path} is empty (no JSON lines): {fix}")
    return rows


def sha256_json(data: Any) -> str:
    """sha256 of the canonical JSON of ``data`` (sorted keys, no spaces)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_writable(folder: str | Path, *, flag: str = "--out", create: bool = True) -> Path:
    """Prove that files can be written in ``folder``, before any work.

    With ``create`` the folder is made (if needed) and a probe file written and removed; without
    it nothing is created: the nearest existing ancestor must be a writable folder.

    Raises:
        OutputError: it is a file, lies under a file, or cannot be created or written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder: choose another {flag}")
    if not create and not folder.exists():
        parent = folder.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(
                f"{folder} cannot be created ({parent} is not a writable folder): "
                f"choose another {flag}"
            )
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(
            f"{folder} is not writable ({type(e).__name__}: {e.strerror or e}): choose another {flag}"
        ) from e
    return folder


def check_output_path(path: str | Path, *, flag: str = "--out", folder: bool = False) -> Path:
    """Check, creating nothing, that ``path`` can be written: as a file, or with ``folder`` as a
    folder (new, or reused). Its nearest existing ancestor must be a writable folder.

    Raises:
        OutputError: ``path`` is of the other kind, lies under a file, or cannot be written;
            the message names the path and the option to change (``flag``).
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        kind = "a folder, not a file" if path.is_dir() else "a file, not a folder"
        raise OutputError(f"{path} is {kind}: choose another {flag}")
    nearest = next(p for p in (path, *path.parents) if p.exists())
    if nearest == path and not folder:
        nearest = path.parent
    if not nearest.is_dir():
        raise OutputError(
            f"{nearest} is a file, so {path} cannot be created under it: choose another {flag}"
        )
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise OutputError(f"{nearest} is not writable: choose another {flag}")
    return path


class RunLock:
    """An exclusive lock on a run folder, held for the life of a ``with`` block.

    Example::

        with RunLock(run_dir):
            ...  # only this process writes in run_dir

    Raises:
        RunLockedError: another process holds the folder (its pid and command are named).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._lock = FileLock(self.folder / LOCK_FILE, timeout=0)

    def __enter__(self) -> "RunLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            holder = read_json(self.folder / LOCK_INFO) or {}
            raise RunLockedError(
                f"{self.folder} is in use by another run (pid {holder.get('pid', '?')}: "
                f"{holder.get('command', '?')}, since {holder.get('since', '?')}): wait for it to "
                "finish or use another folder"
            ) from None
        info = {
            "pid": os.getpid(),
            "command": " ".join(sys.argv)[:200],
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_json(self.folder / LOCK_INFO, info)
        return self

    def __exit__(self, *exc: object) -> None:
        (self.folder / LOCK_INFO).unlink(missing_ok=True)
        self._lock.release()


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): data}


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key old -> new`` for every (dotted) field that differs."""
    a, b = _flatten(old), _flatten(new)
    return [
        f"{k} {a.get(k, '(none)')!r} -> {b.get(k, '(none)')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def describe_differences(diff: list[str], limit: int = 6) -> str:
    """The first ``limit`` differences joined for a one-line message."""
    return "; ".join(diff[:limit]) + (
        f"; and {len(diff) - limit} more" if len(diff) > limit else ""
    )


def normalise(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(data, default=str))


def check_fingerprint(
    folder: str | Path,
    fingerprint: Mapping[str, Any],
    *,
    name: str = "fingerprint.json",
    other: str = "another folder",
) -> bool:
    """Store ``fingerprint`` in a new folder, or check that it equals the stored one.

    Returns:
        ``True`` if the folder already held this run (a resume), ``False`` if it was new.

    Raises:
        RunMismatchError: the folder holds a run with another fingerprint (names what differs).
    """
    path = Path(folder) / name
    stored = read_json(path)
    fingerprint = normalise(fingerprint)
    if stored is None:
        write_json(path, fingerprint)
        return False
    diff = differences(stored, fingerprint)
    if diff:
        raise RunMismatchError(
            f"{folder} holds results of another run ({describe_differences(diff)}): use {other}, "
            "or delete it to start over"
        )
    return True


@contextmanager
def claimed_run(folder: str | Path, fingerprint: Mapping[str, Any]) -> Iterator[bool]:
    """Lock ``folder`` and check its fingerprint; yields ``True`` for a resume."""
    with RunLock(folder):
        yield check_fingerprint(folder, fingerprint)
