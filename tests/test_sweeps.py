"""Sweep runners (beta x lr_alpha heatmap, position sweep) on the tiny model with a rule-based test
judge (not a real judge): every cell is written, a rerun resumes without retraining, configs
round-trip and validate, and the figures render from the saved sweep.json."""

import dataclasses
import json
import shutil
import zlib

import pytest

import prosv_lens.experiments.sweeps as sweeps
from prosv_lens.errors import PositionSpecError
from prosv_lens.evaluation.judges import Judge, JudgeItem, Rating
from prosv_lens.experiments.sweep_results import SweepResult
from prosv_lens.experiments.sweeps import (
    HeatmapConfig,
    PositionSweepConfig,
    SweepError,
    format_sweep,
    load_sweep_config,
    run_heatmap,
    run_position_sweep,
)
from prosv_lens.figures import heatmap_figure, position_sweep_figure, regenerate_figures


class HashJudge(Judge):
    """Test double: ratings are a deterministic hash of the response text."""

    name = "hash-test-judge"

    def rate(self, items: list[JudgeItem]) -> list[Rating]:
        return [
            Rating(*(float(zlib.crc32(f"{k}{it.response}".encode()) % 3) for k in "cif"))
            for it in items
        ]


SIZES = {"model": "tiny", "layer": 1, "epochs": 1, "batch_size": 4, "n_train": 4, "n_heldout": 2, "n_eval": 2,
         "max_new_tokens": 3}  # fmt: skip
HEAT = HeatmapConfig(betas=(0.5, 2.0), lr_alphas=(1.0,), optimizers=("adam", "sgd"), **SIZES)
POS = PositionSweepConfig(specs=("all", "f2+l2"), **SIZES)


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = sweeps.train

    def counting(model, data, cfg, **kw):
        calls.append(cfg)
        return real(model, data, cfg, **kw)

    monkeypatch.setattr(sweeps, "train", counting)
    return calls


def test_heatmap_writes_every_cell_and_resumes_without_retraining(tiny, tmp_path, counted):
    out = tmp_path / "heat"
    sweep = run_heatmap(tiny, HEAT, out, HashJudge())
    assert len(counted) == 4
    assert {(c.optimizer, c.beta, c.lr_alpha) for c in counted} == {
        (o, b, 1.0) for o in ("adam", "sgd") for b in (0.5, 2.0)
    }
    assert isinstance(sweep, SweepResult)
    saved = SweepResult.load(out / "sweep.json")
    assert saved == sweep
    assert json.loads((out / "sweep.json").read_text()) == sweep.to_dict()
    assert saved.kind == "heatmap" and len(saved.cells) == 4
    for c in saved.cells:
        assert c.diverged is None and c.positions is None
        assert c.train_config["beta"] == c.beta and c.train_config["optimizer"] == c.optimizer
        assert c.heldout_loss > 0 and c.train_loss_final > 0
        assert c.n_answers == 2 and 0 <= c.score().mean <= 2
    # Different init scales give different vectors (the sweep really varies beta).
    alphas = {c.alpha for c in saved.cells if c.optimizer == "adam"}
    assert len(alphas) == 2
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * (4 + 1)  # 2 answers per cell plus the unsteered baseline
    again = run_heatmap(tiny, HEAT, out, HashJudge())
    assert len(counted) == 4  # nothing retrained
    assert again == saved
    lines = format_sweep(saved).splitlines()
    assert len(lines) == 5 and lines[0].startswith("unsteered: held-out loss")
    assert [line.split(":")[0] for line in lines[1:]] == [c.key for c in saved.cells]


def test_partial_sweep_resumes_only_missing_cells(tiny, tmp_path, counted):
    out = tmp_path / "pos"
    first = run_position_sweep(tiny, POS, out, HashJudge())
    rows = (out / "rows.jsonl").read_bytes()
    # Pretend the run was killed before the second cell's units committed.
    job = sweeps.SweepJob(POS)
    f2l2 = [
        u for u in job.units() if u.settings.get("train_config", {}).get("positions") == "f2+l2"
    ]
    assert [u.kind for u in f2l2] == ["train", "eval"]
    for unit in f2l2:
        shutil.rmtree(out / "units" / unit.id)
    counted.clear()
    sweep = run_position_sweep(tiny, POS, out, HashJudge())
    assert [c.positions for c in counted] == ["f2+l2"]
    assert [c.positions for c in sweep.cells] == ["all", "f2+l2"]
    assert _timeless(sweep) == _timeless(first)
    assert (out / "rows.jsonl").read_bytes() == rows


def _timeless(sweep: SweepResult) -> SweepResult:
    """A sweep without its timings (the only part that differs between runs)."""
    return dataclasses.replace(
        sweep, cells=tuple(dataclasses.replace(c, seconds={}) for c in sweep.cells)
    )


def saved_json(folder) -> dict:
    """The parsed sweep.json in ``folder``."""
    return json.loads((folder / "sweep.json").read_text())


def test_other_config_in_out_dir_is_refused(tiny, tmp_path):
    run_position_sweep(tiny, PositionSweepConfig(specs=("f4",), **SIZES), tmp_path, HashJudge())
    with pytest.raises(SweepError, match="another config"):
        run_position_sweep(tiny, POS, tmp_path, HashJudge())


def test_diverged_cell_is_recorded_not_raised(tiny, tmp_path, monkeypatch):
    from prosv_lens.errors import TrainingDivergedError

    def exploding(model, data, cfg, **kw):
        raise TrainingDivergedError("loss is nan at step 0")

    monkeypatch.setattr(sweeps, "train", exploding)
    cfg = PositionSweepConfig(specs=("f4",), **SIZES)
    sweep = run_position_sweep(tiny, cfg, tmp_path, HashJudge())
    (cell,) = sweep.cells
    assert "nan" in cell.diverged and cell.scores is None and cell.heldout_loss is None
    with pytest.raises(ValueError, match="diverged"):
        cell.score()
    # the file keeps the layout of before typed results: no measurements for a diverged cell
    saved = json.loads((tmp_path / "sweep.json").read_text())["cells"][0]
    assert set(saved) == {"positions", "key", "train_config", "diverged", "seconds"}
    assert SweepResult.load(tmp_path / "sweep.json") == sweep
    assert "diverged (" in format_sweep(sweep).splitlines()[1]
    assert position_sweep_figure(sweep) is not None
    assert position_sweep_figure(saved_json(tmp_path)) is not None


def test_config_round_trip_and_file_loading(tmp_path):
    for cfg in (HEAT, POS):
        d = json.loads(json.dumps(cfg.to_dict()))
        assert type(cfg).from_dict(d) == cfg
        path = tmp_path / f"{cfg.kind}.json"
        path.write_text(json.dumps(d))
        assert load_sweep_config(path) == cfg
    sizes = {
        "heatmap_small": 18,
        "positions_small": 7,
        "heatmap_medium": 32,
        "heatmap_axbench": 18,
        "positions_axbench": 7,
    }
    for name, n_cells in sizes.items():
        cfg = load_sweep_config(f"configs/{name}.json")
        assert cfg.model == "smollm2-135m-instruct" and len(cfg.cells()) == n_cells


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: HeatmapConfig(betas=()), "betas"),
        (lambda: HeatmapConfig(lr_alphas=(1.0, -1.0)), "lr_alphas"),
        (lambda: HeatmapConfig(betas=(1.0, 1.0)), "repeated"),
        (lambda: HeatmapConfig(optimizers=("adamw",)), "optimizers"),
        (lambda: PositionSweepConfig(preset="caa"), "preset"),
        (lambda: PositionSweepConfig(specs=()), "specs"),
        (lambda: PositionSweepConfig(n_eval=0), "n_eval"),
        (lambda: HeatmapConfig.from_dict({"betaz": [1]}), "unknown"),
        (lambda: HeatmapConfig.from_dict({"kind": "positions"}), "kind"),
        (lambda: HeatmapConfig(axbench="some/folder"), "axbench goes with exactly one"),
        (lambda: PositionSweepConfig(concept_id=3), "axbench goes with exactly one"),
        (lambda: HeatmapConfig(axbench="f", concept_id=1, n_concepts=2), "exactly one"),
        (lambda: HeatmapConfig(axbench="f", concept_ids=()), "non-empty"),
        (lambda: HeatmapConfig(axbench="f", concept_ids=(1, 1)), "repeats"),
        (lambda: HeatmapConfig(axbench="f", n_concepts=0), "n_concepts"),
        (lambda: HeatmapConfig(concepts_per_unit=0), "concepts_per_unit"),
        (lambda: HeatmapConfig.from_dict({"concept_ids": [1, "x"]}), "concept_ids"),
    ],
)
def test_bad_configs_raise_clear_errors(make, match):
    with pytest.raises(SweepError, match=match):
        make()


def test_bad_position_spec_and_missing_kind(tmp_path):
    with pytest.raises(PositionSpecError):
        PositionSweepConfig(specs=("middle",))
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "tiny"}))
    with pytest.raises(SweepError, match="kind"):
        load_sweep_config(path)


def test_sweep_on_an_axbench_concept_and_resume_of_an_older_config(tiny, tmp_path, counted):
    import pandas as pd

    folder = tmp_path / "axbench"
    folder.mkdir()
    concept = "references to the sea"
    meta = {
        "concept_id": 0,
        "concept": concept,
        "ref": "",
        "concept_genres_map": {concept: ["text"]},
    }
    (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
    rows = [
        {"input": f"Question {i}?", "output": f"The sea, answer {i}.", "output_concept": concept,
         "concept_genre": "text", "category": "positive", "dataset_category": "instruction",
         "concept_id": 0}
        for i in range(8)
    ]  # fmt: skip
    pd.DataFrame(rows).to_parquet(folder / "train_data.parquet")
    cfg = PositionSweepConfig(specs=("f2+l2",), axbench=str(folder), concept_id=0, **SIZES)
    sweep = run_position_sweep(tiny, cfg, tmp_path / "out", HashJudge())
    assert sweep.concept == concept and len(counted) == 1
    judged = [json.loads(x) for x in (tmp_path / "out/rows.jsonl").read_text().splitlines()]
    assert {r["concept"] for r in judged} == {concept}
    # A sweep.json saved before a config field existed resumes (the field takes its default).
    plain = tmp_path / "plain"
    run_position_sweep(tiny, POS, plain, HashJudge())
    saved = json.loads((plain / "sweep.json").read_text())
    del saved["config"]["axbench"], saved["config"]["concept_id"]
    (plain / "sweep.json").write_text(json.dumps(saved))
    n = len(counted)
    run_position_sweep(tiny, POS, plain, HashJudge())
    assert len(counted) == n


def test_too_many_training_examples_is_refused(tiny, tmp_path):
    cfg = PositionSweepConfig(**{**SIZES, "n_train": 10_000})
    with pytest.raises(SweepError, match="held out"):
        run_position_sweep(tiny, cfg, tmp_path, HashJudge())


def test_figures_render_from_saved_sweeps(tiny, tmp_path):
    run_heatmap(tiny, HEAT, tmp_path / "results" / "heat", HashJudge())
    run_position_sweep(tiny, POS, tmp_path / "results" / "pos", HashJudge())
    heat = SweepResult.load(tmp_path / "results" / "heat" / "sweep.json")
    pos = SweepResult.load(tmp_path / "results" / "pos" / "sweep.json")
    fig = heatmap_figure(heat)
    assert len(fig.axes) == 2 * 2 * 2  # 2 optimizers x 2 panels, each with a colorbar
    assert len(position_sweep_figure(pos).axes) == 2
    with pytest.raises(ValueError, match="heatmap"):
        heatmap_figure(pos)
    # the parsed JSON draws too (regenerate_figures reads it: figures cannot import results)
    assert len(heatmap_figure(saved_json(tmp_path / "results" / "heat")).axes) == 8
    with pytest.raises(ValueError, match="positions"):
        position_sweep_figure(saved_json(tmp_path / "results" / "heat"))
    written = regenerate_figures(tmp_path / "results", tmp_path / "figs")
    names = {p.name for p in written}
    assert {
        "heat_heatmap.png",
        "heat_heatmap.pdf",
        "pos_positions.png",
        "pos_positions.pdf",
    } <= names
    assert all(p.stat().st_size > 0 for p in written)
