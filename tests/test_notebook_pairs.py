"""Every notebook is a jupytext pair: ``notebooks/NN_name.py`` (percent format, the file that CI
executes in ``tests/slow/test_notebooks.py``) and ``NN_name.ipynb`` (the same cells with their
saved outputs, for Jupyter and GitHub). Both must say so in their header, hold the same code and
markdown, and the ``.ipynb`` must have been executed top to bottom in one kernel without error.

After editing either file: ``jupytext --sync notebooks/*.ipynb``; to refresh the outputs:
``python scripts/execute_notebooks.py`` (docs/development.md)."""

import difflib
import re
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
FORMATS = "ipynb,py:percent"

PY = sorted(NOTEBOOKS.glob("*.py"))
IPYNB = sorted(NOTEBOOKS.glob("*.ipynb"))
PAIRED = [p for p in PY if p.with_suffix(".ipynb").exists()]


def test_every_notebook_has_both_files():
    py, ipynb = {p.stem for p in PY}, {p.stem for p in IPYNB}
    assert ipynb - py == set(), "an .ipynb without its .py: `jupytext --sync` it"
    missing = py - ipynb
    assert missing == set(), "a .py without its .ipynb: run scripts/execute_notebooks.py on it"
    assert PAIRED, "no notebook pairs found"


def _cells(path: Path) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in jupytext.read(path).cells]


@pytest.mark.parametrize("py", PAIRED, ids=lambda p: p.stem)
def test_pair_headers_and_cells_agree(py: Path):
    ipynb = py.with_suffix(".ipynb")
    for path in (py, ipynb):
        formats = jupytext.read(path).metadata.get("jupytext", {}).get("formats")
        assert formats == FORMATS, f"{path.name}: header formats {formats!r}, want {FORMATS!r}"
    py_cells, nb_cells = _cells(py), _cells(ipynb)
    for i, (a, b) in enumerate(zip(py_cells, nb_cells, strict=False)):
        lines = a[1].splitlines(), b[1].splitlines()
        diff = difflib.unified_diff(*lines, fromfile=".py", tofile=".ipynb", n=1, lineterm="")
        assert a == b, (
            f"{py.stem}: {a[0]} cell {i} differs between .py and .ipynb ({b[0]}); run "
            f"`jupytext --sync notebooks/{ipynb.name}`\n" + "\n".join(diff)
        )
    assert len(py_cells) == len(nb_cells), f"{py.stem}: cell counts differ; `jupytext --sync` it"


# A code cell that prints or displays must have saved output; one that displays a figure or
# leaves one open (`fig = *_figure(...)`, drawn by Jupyter's inline backend) an image; one that
# ends in `HTML(...)` (the circuitsvis view) HTML.
_SHOWS = re.compile(r"^\s*(print|display|HTML)\(", re.MULTILINE)
_DRAWS = re.compile(r"^(fig = \w+_figure\(|\s*display\(fig\))", re.MULTILINE)


@pytest.mark.parametrize("py", PAIRED, ids=lambda p: p.stem)
def test_ipynb_is_executed_with_outputs(py: Path):
    code = [c for c in jupytext.read(py.with_suffix(".ipynb")).cells if c.cell_type == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{py.stem}.ipynb: execution counts {counts}, not one top-to-bottom run; "
        f"re-execute it with scripts/execute_notebooks.py"
    )
    for i, cell in enumerate(code):
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{py.stem}.ipynb: code cell {i} saved an error: {errors[0].ename}"
        if _SHOWS.search(cell.source):
            assert cell.outputs, f"{py.stem}.ipynb: code cell {i} shows something but has no output"
        if _DRAWS.search(cell.source):
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), (
                f"{py.stem}.ipynb: code cell {i} draws a figure but saved no image"
            )
        if cell.source.strip().splitlines()[-1].startswith("HTML("):
            assert any("text/html" in o.get("data", {}) for o in cell.outputs), (
                f"{py.stem}.ipynb: code cell {i} ends in HTML(...) but saved no HTML"
            )
