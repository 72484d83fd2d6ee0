"""An experiment's output folder: ownership, write access, fingerprint, atomic JSON files.

A run folder is claimed by its ``fingerprint.json``: what produced the results in it (setting,
model, dtype, data source, sizes, seeds, judge, device type, package version). A later run with the
same fingerprint resumes in it; one with another fingerprint is refused with the differences
named, so results of different runs are never mixed. A non-empty folder without a fingerprint
belongs to something else and is refused too. Every file is written atomically (a temporary
file, then a rename), so a killed run leaves either the old file or the new one.
"""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from prosv_lens.errors import ExperimentError, RunMismatchError

FINGERPRINT = "fingerprint.json"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (the folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` if there is no such file."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ExperimentError(f"{path} is not valid JSON ({e}); delete it to redo that part") from e


def claim_folder(out: Path, kind: str) -> Path:
    """Check that ``out`` can hold a run of ``kind``: new, empty, or holding such a run, and
    writable. Creates it. Raises :class:`ExperimentError` (one line) otherwise."""
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"output folder {out} is a file: choose another --out")
    if out.is_dir() and any(out.iterdir()):
        stored = read_json(out / FINGERPRINT)
        if not isinstance(stored, dict) or stored.get("kind") != kind:
            raise ExperimentError(
                f"output folder {out} is not empty and holds no {kind} run ({FINGERPRINT} "
                "missing or of another kind): choose another --out"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ExperimentError(
            f"output folder {out} is not writable ({type(e).__name__}: {e.strerror or e}): "
            "choose another --out"
        ) from e
    return out


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): data}


def differences(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every (dotted) field that differs."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k} {a.get(k, '(none)')!r} -> {b.get(k, '(none)')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]  # fmt: skip


def check_fingerprint(out: Path, fingerprint: dict) -> bool:
    """Store ``fingerprint`` in a new folder, or check it equals the stored one.

    Returns:
        ``True`` if the folder already held this run (a resume), ``False`` if it is new.

    Raises:
        RunMismatchError: the folder holds a run with another fingerprint (names what differs).
    """
    path = out / FINGERPRINT
    stored = read_json(path)
    # Round-trip through JSON so tuples and lists compare alike.
    fingerprint = json.loads(json.dumps(fingerprint, default=str))
    if stored is None:
        write_json(path, fingerprint)
        return False
    diff = differences(stored, fingerprint)
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise RunMismatchError(
            f"{out} holds results of another run ({shown}): use another --out, or delete the "
            "folder to start over"
        )
    return True


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
