"""Pair each notebook's jupytext ``.py`` with an ``.ipynb`` and execute it, saving the outputs.

    .venv/bin/python scripts/execute_notebooks.py                          # every notebooks/*.py
    .venv/bin/python scripts/execute_notebooks.py notebooks/03_attention_flow.py
    .venv/bin/python scripts/execute_notebooks.py --full notebooks/01_quickstart.py

For each notebook: the ``.py`` header gets ``formats: ipynb,py:percent`` (jupytext pairing), the
cells are read from the ``.py`` (edit either file, then ``jupytext --sync notebooks/*.ipynb``
first), executed in a fresh ``python3`` kernel and written to the ``.ipynb`` with their outputs.

The kernel runs in a temporary copy of the repository's layout (``<tmp>/<repo>/notebooks`` as
the working directory, with copies of ``results/`` and the ``shared/`` folder beside the
repository), so the notebooks' relative paths resolve as from ``notebooks/`` but nothing they
write lands in the repository. ``PROSV_SMOKE=1`` (toy sizes) unless ``--full``. Cell timings
are not recorded, and tqdm's progress bars (and its warning that ipywidgets is missing) are left
out of the saved outputs, so a rerun changes only what the notebook prints and draws.
"""

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SHARED = ROOT.parent / "shared"
FORMATS = "ipynb,py:percent"
# A stderr line that is only a tqdm bar ("training:  50%|#####     | 1/2 [...]") or tqdm's
# "IProgress not found" warning (and the source line it quotes).
_NOISE = re.compile(
    r"^(\s*|.*\d+%\|.*\|.*|.*TqdmWarning: IProgress not found.*|\s*from \.autonotebook import.*)$"
)


def _is_noise(output: dict) -> bool:
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return False
    return all(_NOISE.match(line) for line in re.split(r"[\r\n]", output["text"]))


def clean(nb: "jupytext.NotebookNode") -> None:
    """Drop progress-bar noise from the saved outputs (in place)."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not _is_noise(o)]


def pair(py: Path) -> "jupytext.NotebookNode":
    """Read ``py`` and make sure its header pairs it with an ``.ipynb`` (rewrites it if not)."""
    nb = jupytext.read(py)
    meta = nb.metadata.setdefault("jupytext", {})
    if meta.get("formats") != FORMATS:
        meta["formats"] = FORMATS
        jupytext.write(nb, py, fmt="py:percent")
    return nb


def execute(py: Path, *, full: bool, timeout: int) -> float:
    """Execute ``py`` in a throwaway copy of the layout; write ``py.with_suffix('.ipynb')``.

    Returns:
        Seconds the kernel took.
    """
    nb = pair(py)
    env = {
        "PROSV_SMOKE": "0" if full else "1",
        # No hub download unless asked for (HF_HUB_OFFLINE=0), no progress bars where tqdm allows.
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "TQDM_DISABLE": os.environ.get("TQDM_DISABLE", "1"),
    }
    with tempfile.TemporaryDirectory(prefix="prosv_notebooks_") as tmp:
        repo = Path(tmp) / ROOT.name
        cwd = repo / "notebooks"
        cwd.mkdir(parents=True)
        if (ROOT / "results").is_dir():
            shutil.copytree(ROOT / "results", repo / "results")
        if SHARED.is_dir():
            shutil.copytree(SHARED / "data", Path(tmp) / "shared" / "data")
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # the kernel inherits this process's environment
        try:
            client = NotebookClient(
                nb,
                timeout=timeout,
                kernel_name="python3",
                record_timing=False,
                resources={"metadata": {"path": str(cwd)}},
            )
            start = time.perf_counter()
            client.execute()
            seconds = time.perf_counter() - start
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    clean(nb)
    jupytext.write(nb, py.with_suffix(".ipynb"))
    return seconds


def main(argv: list[str] | None = None) -> int:
    """Pair and execute the given notebooks (default: every ``notebooks/*.py``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks/NN_name.py (or .ipynb)")
    parser.add_argument("--full", action="store_true", help="real sizes, not PROSV_SMOKE=1")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = [p.with_suffix(".py") for p in args.notebooks] or sorted(NOTEBOOKS.glob("*.py"))
    for py in paths:
        seconds = execute(py.resolve(), full=args.full, timeout=args.timeout)
        size = py.with_suffix(".ipynb").stat().st_size
        print(f"{py.with_suffix('.ipynb')}: executed in {seconds:.0f} s, {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
