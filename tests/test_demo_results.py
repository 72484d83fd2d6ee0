"""Typed demo results (``results.json`` of ``prosv demo``): the committed run still loads and
saves back to the same content, new results round-trip, a bad field is one clear error, and a
real (tiny-model) demo run writes a file its readers load."""

import json
from pathlib import Path

import pytest

from prosv_lens.cli import report_folders
from prosv_lens.errors import ResultFileError
from prosv_lens.evaluation.steering_eval import summarize
from prosv_lens.experiments.claims import collect_claims
from prosv_lens.experiments.demo_report import render_report
from prosv_lens.experiments.demo_results import (
    DemoResults,
    SavedMethodScore,
    TrainingRun,
    UtilityResult,
)

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = sorted((ROOT / "results").rglob("demo*/results.json"))


def test_the_committed_demo_results_are_found():
    assert ROOT / "results/demo_ocean/results.json" in COMMITTED


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_results_load_and_save_back_to_the_same_content(path, tmp_path):
    original = json.loads(path.read_text())
    assert "format_version" not in original  # written before typed results: reads as version 1
    results = DemoResults.load(path)
    saved = json.loads(results.save(tmp_path / "results.json").read_text())
    assert saved.pop("format_version") == 1
    assert saved == original
    assert json.dumps(results.to_dict(), indent=2) == json.dumps(
        {**original, "format_version": 1}, indent=2
    ), "fields keep the committed key order"


def test_committed_results_read_as_attributes():
    r = DemoResults.load(ROOT / "results/demo_ocean/results.json")
    assert (r.concept, r.layer, r.model, r.n_train) == (
        "the ocean",
        12,
        "smollm2-135m-instruct",
        64,
    )
    assert [s.method for s in r.steering] == ["unsteered", "prompt", "diffmean", "prosv", "fssv"]
    assert list(r.by_method("robustness"))[-2:] == ["fssv 80%", "fssv 50%"]
    prosv = r.by_method()["prosv"]
    assert prosv.n_answers == 20 and prosv.overall.low <= prosv.overall.mean <= prosv.overall.high
    assert prosv.parse_failures is None  # saved before parse failures were counted
    assert (
        r.by_method()["diffmean"].factors == {"the ocean": 0.2} == {"the ocean": r.diffmean_factor}
    )
    assert r.utility["unsteered"].kl is None and r.utility["fssv 50%"].kl is not None
    assert r.utility["prosv"].accuracy.n == 84
    assert r.alphas["prompt"] is None and r.alphas["prosv"] == pytest.approx(22.9175, abs=1e-3)
    log = r.training["prosv"].log
    assert len(log) == 72 and log[0].step == 0 and isinstance(log[0].step, int)
    assert r.figures == (
        "figures/steering_scores.png",
        "figures/utility_vs_robustness.png",
        "figures/training_curves.png",
    )
    assert r.seconds["total"] == 575.6
    with pytest.raises(ValueError, match="suite must be"):
        r.by_method("utility")


def _rows() -> list[dict]:
    """Judged rows of two methods on the test split, one reply of ``b`` unparseable."""
    rows = []
    for m, scores in (("a", (2.0, 1.0, 2.0)), ("b", (0.0, 2.0, 1.0))):
        for i in range(4):
            failures = ["concept"] if (m, i) == ("b", 0) else []
            rows.append(
                {
                    "suite": "steering",
                    "split": "test",
                    "method": m,
                    "concept": "sea",
                    "instruction_id": i,
                    "factor": 0.5 if m == "b" else None,
                    "score_concept": scores[0],
                    "score_instruct": scores[1],
                    "score_fluency": scores[2],
                    "overall": min(scores) + i / 10,
                    "judge_details": {"parse_failures": failures},
                }
            )
    return rows


def _new_results(**changes: object) -> DemoResults:
    scores = tuple(SavedMethodScore.of(s) for s in summarize(_rows(), "steering"))
    step = {
        "step": 0,
        "epoch": 0,
        "loss": 2.5,
        "alpha": 8.0,
        "v_norm": 1.0,
        "grad_norm_v": 0.3,
        "grad_alpha": 0.01,
        "lr_v": 0.04,
        "lr_alpha": 10.0,
    }
    fields = {
        "config": {"model": "tiny", "concept": "sea", "layer": None, "seed": 0},
        "model": "tiny",
        "layer": 1,
        "concept": "sea",
        "n_train": 4,
        "judge": "hash-test-judge",
        "resid_norm": 3.5,
        "diffmean_factor": 0.5,
        "alphas": {"a": 1.0, "b": None},
        "vector_norms": {"a": 2.0},
        "steering": scores,
        "robustness": scores[:1],
        "utility": {
            "unsteered": UtilityResult(scores[0].concept, None),
            "a": UtilityResult(scores[0].concept, scores[1].fluency),
        },
        "training": {"a": TrainingRun.of(1.5, [step, {**step, "step": 1, "loss": 2.0}])},
        **changes,
    }
    return DemoResults(**fields)  # type: ignore[arg-type]


def test_new_results_round_trip_with_parse_failures(tmp_path):
    results = _new_results().with_report(("figures/x.png",), {"train": 1.0, "total": 2.0})
    path = results.save(tmp_path / "results.json")
    data = json.loads(path.read_text())
    assert data["format_version"] == 1
    b = next(s for s in data["steering"] if s["method"] == "b")
    assert b["parse_failures"] == {
        "replies": 12,
        "failed": 1,
        "rate": 1 / 12,
        "by_criterion": {"concept": 1, "instruct": 0, "fluency": 0},
    }
    assert b["factors"] == {"sea": 0.5}
    loaded = DemoResults.load(path)
    assert loaded == results
    assert loaded.training["a"].log[1].loss == 2.0 and loaded.figures == ("figures/x.png",)
    assert loaded.by_method()["b"].parse_failures is not None
    assert loaded.by_method()["b"].parse_failures.failed == 1


def _committed() -> dict:
    return json.loads((ROOT / "results/demo_ocean/results.json").read_text())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.pop("layer"), '"layer"'),
        (lambda d: d.__setitem__("layer", "twelve"), '"layer"'),
        (lambda d: d["utility"]["prosv"].__setitem__("kl", [1]), '"utility.kl"'),
        (lambda d: d["training"]["prosv"]["log"][3].__setitem__("step", "x"), "training.log.step"),
        (lambda d: d["steering"][0].pop("n_answers"), '"steering.n_answers"'),
        (lambda d: d.__setitem__("extra", 1), '"extra"'),
        (lambda d: d.__setitem__("format_version", 2), "format version 2"),
    ],
    ids=["missing", "wrong-type", "nested-wrong-type", "log-step", "score-field", "unknown", "v2"],
)
def test_a_bad_field_is_one_line_naming_the_file_and_field(tmp_path, change, named):
    data = _committed()
    change(data)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultFileError) as e:
        DemoResults.load(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and named in message


def test_a_string_for_a_float_names_the_field(tmp_path):
    data = _committed()
    data["steering"][1]["overall"]["mean"] = "high"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultFileError, match="overall.mean"):
        DemoResults.load(path)


def test_not_json_and_not_an_object_are_result_file_errors(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"steering": [')
    with pytest.raises(ResultFileError, match="is not valid JSON"):
        DemoResults.load(path)
    path.write_text("[1, 2, 3]")
    with pytest.raises(ResultFileError, match="is not a demo result"):
        DemoResults.load(path)


def test_the_report_names_a_wrong_typed_demo_result(tmp_path):
    folder = tmp_path / report_folders().demo
    folder.mkdir()
    data = _committed()
    data["steering"][3]["n_answers"] = "20"
    (folder / "results.json").write_text(json.dumps(data))
    (folder / "rows.jsonl").write_text((ROOT / "results/demo_ocean/rows.jsonl").read_text())
    with pytest.raises(
        ResultFileError, match=r"results\.json is not a demo result.*steering\.n_answers"
    ):
        collect_claims(tmp_path, report_folders())


def test_a_demo_run_writes_results_its_readers_load(tmp_path, monkeypatch):
    """A whole (tiny-model, deterministic-judge) demo run: the saved file loads typed, carries
    ``format_version`` and parse failures, and renders the run's own report.md."""
    from _faults import DEMO, HashJudge

    from prosv_lens.experiments import demo

    monkeypatch.setattr(demo, "make_judge", lambda kind, model: HashJudge())
    run = demo.run_demo(demo.DemoConfig(**DEMO, run=str(tmp_path / "run")))
    data = json.loads((run / "results.json").read_text())
    assert data["format_version"] == 1 and data["config"]["model"] == "tiny"
    results = DemoResults.load(run / "results.json")
    assert [s.method for s in results.steering] == [
        "unsteered",
        "prompt",
        "diffmean",
        "prosv",
        "fssv",
    ]
    assert all(s.parse_failures is not None for s in results.steering + results.robustness)
    assert set(results.utility) == {
        "unsteered",
        "prompt",
        "diffmean",
        "prosv",
        "fssv",
        "fssv 80%",
        "fssv 50%",
    }
    assert results.figures and all((run / f).exists() for f in results.figures)
    assert results.seconds["total"] > 0 and len(results.training["prosv"].log) >= 1
    rows = [json.loads(line) for line in (run / "rows.jsonl").read_text().splitlines()]
    assert (run / "report.md").read_text() == render_report(results, rows)
