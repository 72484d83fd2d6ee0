"""Typed sweep results (``sweep.json`` of ``prosv sweep``): every committed sweep still loads and
saves back to the same content, a bad field is one clear error naming the file and field, and a
real (tiny-model) sweep's result round-trips and is what its readers load."""

import json
from pathlib import Path

import pytest
from test_sweeps import HEAT, POS, HashJudge

from prosv_lens.errors import ResultFileError
from prosv_lens.evaluation.stats import Estimate
from prosv_lens.experiments.claims import _Source, _sweep, heatmap_claims, position_claims
from prosv_lens.experiments.sweep_results import SweepBaseline, SweepCell, SweepResult
from prosv_lens.experiments.sweeps import run_heatmap, run_position_sweep
from prosv_lens.figures.regenerate import sweep_figures

ROOT = Path(__file__).resolve().parents[1]
WHERE = _Source("results/x", "prosv sweep x.json")
COMMITTED = sorted((ROOT / "results").rglob("sweep.json"))


def test_the_committed_sweeps_are_found():
    names = {p.parent.name for p in COMMITTED}
    assert {"heatmap_small", "positions_small", "heatmap_axbench", "positions_axbench"} <= names


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_sweeps_load_and_save_back_to_the_same_content(path, tmp_path):
    original = json.loads(path.read_text())
    assert "format_version" not in original  # written before typed results: reads as version 1
    sweep = SweepResult.load(path)
    saved = sweep.save(tmp_path / "sweep.json")
    again = json.loads(saved.read_text())
    assert again.pop("format_version") == 1
    assert again == original
    # byte for byte too, apart from the added line (write_json sorts keys, as before)
    lines = saved.read_text().splitlines(keepends=True)
    assert "".join(x for x in lines if '"format_version"' not in x) == path.read_text()
    assert SweepResult.load(saved) == sweep


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_sweeps_read_as_attributes(path):
    sweep = SweepResult.load(path)
    assert sweep.kind in ("heatmap", "positions") and sweep.cells
    assert isinstance(sweep.baseline, SweepBaseline)
    assert isinstance(sweep.baseline.scores["overall"], Estimate)
    for c in sweep.cells:
        assert isinstance(c, SweepCell) and c.diverged is None
        est = c.score()
        assert isinstance(est, Estimate) and est.low <= est.mean <= est.high
        assert c.n_answers == est.n and isinstance(c.steps, int)
        assert c.train_config["layer"] == sweep.layer
        if sweep.kind == "heatmap":
            assert c.positions is None and c.optimizer in sweep.config["optimizers"]
            assert c.key == f"{c.optimizer} beta={c.beta:g} lr_alpha={c.lr_alpha:g}"
        else:
            assert c.optimizer is None and c.key == c.positions
    assert sweep.cell(sweep.cells[-1].key) is sweep.cells[-1]
    with pytest.raises(KeyError, match="no cell"):
        sweep.cell("no such cell")


def test_the_committed_heatmap_reads_as_expected():
    sweep = SweepResult.load(ROOT / "results/heatmap_small/sweep.json")
    assert (sweep.model, sweep.layer, sweep.concept) == ("smollm2-135m-instruct", 12, "the ocean")
    keys = [c.key for c in sweep.cells]
    assert keys[:2] == ["adam beta=0.5 lr_alpha=0.1", "adam beta=0.5 lr_alpha=1"]
    first = sweep.cells[0]
    assert (first.optimizer, first.beta, first.lr_alpha, first.steps) == ("adam", 0.5, 0.1, 8)
    assert first.score("concept").mean == 0.125 and first.seconds["train"] > 0
    with pytest.raises(ValueError, match="unknown criterion"):
        first.score("style")


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def _committed() -> dict:
    return json.loads((ROOT / "results/positions_small/sweep.json").read_text())


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.update(layer="12"), "layer"),
        (lambda d: d["cells"][1].update(heldout_loss="low"), "cells.heldout_loss"),
        (lambda d: d["cells"][0]["scores"]["overall"].update(n=2.5), "cells.scores.n"),
        (lambda d: d["baseline"].update(n_answers=None), "baseline.n_answers"),
        (lambda d: d.pop("concept"), "concept"),
        (lambda d: d["cells"][0].update(colour="red"), "colour"),
    ],
    ids=["type", "cell", "estimate", "baseline", "missing", "unknown"],
)
def test_a_bad_field_is_a_one_line_error_naming_file_and_field(tmp_path, edit, field):
    data = _committed()
    edit(data)
    path = _write(tmp_path / "sweep.json", data)
    with pytest.raises(ResultFileError) as e:
        SweepResult.load(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and field in message
    assert "sweep result" in message
    # the report names the same problem
    with pytest.raises(ResultFileError, match="sweep.json"):
        _sweep(tmp_path)


def test_other_shapes_and_versions_are_refused(tmp_path):
    with pytest.raises(ResultFileError, match="not a sweep result"):
        SweepResult.load(_write(tmp_path / "list.json", [1, 2]))
    with pytest.raises(ResultFileError, match="format version 2"):
        SweepResult.load(_write(tmp_path / "v2.json", {**_committed(), "format_version": 2}))
    (tmp_path / "cut.json").write_text(json.dumps(_committed())[:100])
    with pytest.raises(ResultFileError, match="not valid JSON"):
        SweepResult.load(tmp_path / "cut.json")
    assert SweepResult.from_dict({**_committed(), "format_version": 1}) == SweepResult.from_dict(
        _committed()
    )


def test_a_hand_written_whole_number_reads_as_a_float(tmp_path):
    data = _committed()
    data["cells"][0]["alpha"] = 5
    sweep = SweepResult.load(_write(tmp_path / "sweep.json", data))
    assert sweep.cells[0].alpha == 5.0 and isinstance(sweep.cells[0].alpha, float)


@pytest.mark.parametrize("kind", ["heatmap", "positions"])
def test_a_run_round_trips_and_its_readers_load_it(tiny, tmp_path, kind):
    out = tmp_path / "results" / kind
    run = run_heatmap if kind == "heatmap" else run_position_sweep
    sweep = run(tiny, HEAT if kind == "heatmap" else POS, out, HashJudge())
    assert isinstance(sweep, SweepResult) and sweep.kind == kind
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["format_version"] == 1 and saved == sweep.to_dict()
    assert SweepResult.load(out / "sweep.json") == sweep
    assert SweepResult.from_dict(json.loads(json.dumps(sweep.to_dict()))) == sweep
    # a heatmap cell's file has the heatmap labels only, a position cell's the spec only
    labels = {"optimizer", "beta", "lr_alpha"} if kind == "heatmap" else {"positions"}
    for cell in saved["cells"]:
        assert set(cell) & {"optimizer", "beta", "lr_alpha", "positions"} == labels
    # the report reads it back (a figure too)
    loaded, rows = _sweep(out)
    assert loaded == sweep and len(rows) == 2 * (len(sweep.cells) + 1)
    if kind == "positions":
        # a two-spec sweep lacks the "prompt" cell: the claim says what is missing
        (claim,) = position_claims(loaded, rows, WHERE, "x")
        assert claim.verdict == "no result" and "prompt" in claim.evidence[0]
    else:
        assert len(heatmap_claims(loaded, rows, WHERE, "x")) == 2
    assert sweep_figures(sweep, tmp_path / "figs")
