"""An experiment's output folder: ownership, write access and fingerprint.

A run folder is claimed by its ``fingerprint.json``: what produced the results in it (setting,
model, dtype, data source, sizes, seeds, judge, device type, package version). A later run with the
same fingerprint resumes in it; one with another fingerprint is refused with the differences
named, so results of different runs are never mixed. A non-empty folder without a fingerprint
belongs to something else and is refused too. Files are written atomically and the folder is
locked while a run works in it (see :mod:`prosv_lens.safe_io`).
"""

from pathlib import Path

from prosv_lens.errors import ExperimentError, OutputError
from prosv_lens.safe_io import check_fingerprint as _check_fingerprint
from prosv_lens.safe_io import check_writable, read_json, write_json, write_text

__all__ = [
    "FINGERPRINT",
    "check_fingerprint",
    "claim_folder",
    "read_json",
    "write_json",
    "write_text",
]

FINGERPRINT = "fingerprint.json"


def claim_folder(out: Path, kind: str) -> Path:
    """Check that ``out`` can hold a run of ``kind``: new, empty, or holding such a run, and
    writable. Creates it. Raises :class:`ExperimentError` (one line) otherwise."""
    if out.exists() and not out.is_dir():
        raise ExperimentError(f"output folder {out} is a file: choose another --out")
    if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".prosv.lock")):
        stored = read_json(out / FINGERPRINT)
        if not isinstance(stored, dict) or stored.get("kind") != kind:
            raise ExperimentError(
                f"output folder {out} is not empty and holds no {kind} run ({FINGERPRINT} "
                "missing or of another kind): choose another --out"
            )
    try:
        check_writable(out)
    except OutputError as e:
        raise ExperimentError(f"output folder {e}") from e
    return out


def check_fingerprint(out: Path, fingerprint: dict) -> bool:
    """:func:`prosv_lens.safe_io.check_fingerprint` for a run folder given with ``--out``."""
    return _check_fingerprint(out, fingerprint, other="another --out")
