"""Typed results of ``prosv reproduce`` (``concepts/<id>/result.json``, ``utility.json``,
``shared/utility_unsteered.json``, ``summary.json``) and ``prosv axbench-eval``
(``scores.json``): every committed file still loads and saves back to the same content, a bad
field is one clear error naming the file and field, and tiny-model runs write files that
round-trip and that their readers (the summary text, the report, the figures) load."""

import json
import shutil
from pathlib import Path

import pytest
from test_reproduce import BIG_CPU, HashJudge, make_axbench_folder, make_setting

from prosv_lens.cli import report_folders
from prosv_lens.errors import ResultFileError
from prosv_lens.evaluation.stats import Estimate
from prosv_lens.experiments import ReproduceConfig, run_reproduce
from prosv_lens.experiments.axbench_eval import AxBenchEvalConfig, run_axbench_eval
from prosv_lens.experiments.axbench_results import AxBenchScores
from prosv_lens.experiments.claims import collect_claims
from prosv_lens.experiments.preflight import KIND as REPRODUCE
from prosv_lens.experiments.report import format_summary
from prosv_lens.experiments.reproduce_results import (
    ConceptResult,
    ConceptUtility,
    ReproduceSummary,
    SavedMethodScore,
    UnsteeredUtility,
)
from prosv_lens.experiments.results import JsonResult
from prosv_lens.figures import steering_scores_figure
from prosv_lens.figures.evaluation import SavedScore, as_score
from prosv_lens.models import make_tiny_model

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["unsteered", "prompt", "diffmean", "prosv", "fssv"]


def _reproduce_runs(root: Path) -> list[Path]:
    """The ``prosv reproduce`` run folders under ``root`` (their fingerprint's kind says so)."""
    return sorted(
        p.parent
        for p in root.rglob("fingerprint.json")
        if json.loads(p.read_text()).get("kind") == REPRODUCE
    )


def _reproduce_files(run: Path) -> list[tuple[type[JsonResult], Path]]:
    """Every typed result file of a reproduce run folder, with its class."""
    files: list[tuple[type[JsonResult], Path]] = [
        (ConceptResult, p) for p in sorted(run.glob("concepts/*/result.json"))
    ]
    files += [(ConceptUtility, p) for p in sorted(run.glob("concepts/*/utility.json"))]
    files += [(UnsteeredUtility, p) for p in run.glob("shared/utility_unsteered.json")]
    files += [(ReproduceSummary, p) for p in run.glob("summary.json")]
    return files


COMMITTED_SCORES = sorted((ROOT / "results").rglob("scores.json"))
COMMITTED_REPRODUCE = [
    f for run in _reproduce_runs(ROOT / "results") for f in _reproduce_files(run)
]


def _saves_back_unchanged(kind: type[JsonResult], path: Path, tmp_path: Path) -> JsonResult:
    """``path`` loads as ``kind`` and saves back to its own content plus ``format_version``
    (a bare-list ``scores.json`` saves as ``{"methods": <the list>}``); returns the result."""
    original = json.loads(path.read_text())
    result = kind.load(path)
    saved = json.loads(result.save(tmp_path / path.name).read_text())
    assert saved.pop("format_version") == 1
    if isinstance(original, dict):
        assert original.pop("format_version", 1) == 1
    assert saved == ({"methods": original} if isinstance(original, list) else original)
    assert kind.load(tmp_path / path.name) == result
    return result


# -- committed files ---------------------------------------------------------------------------


def test_the_committed_axbench_scores_are_found():
    assert ROOT / "results/axbench_l10/scores.json" in COMMITTED_SCORES
    # no reproduce run is committed yet: any that is gets checked below, the tiny run stands in
    assert all(path.is_file() for _, path in COMMITTED_REPRODUCE)


@pytest.mark.parametrize("path", COMMITTED_SCORES, ids=lambda p: p.parent.name)
def test_committed_axbench_scores_load_and_save_back_to_the_same_content(path, tmp_path):
    assert isinstance(json.loads(path.read_text()), list)  # written before typed results
    scores = _saves_back_unchanged(AxBenchScores, path, tmp_path)
    assert isinstance(scores, AxBenchScores)
    assert [s.method for s in scores.methods] == METHODS


@pytest.mark.parametrize(
    ("kind", "path"),
    COMMITTED_REPRODUCE,
    ids=[str(p.relative_to(ROOT)) for _, p in COMMITTED_REPRODUCE],
)
def test_committed_reproduce_results_load_and_save_back_to_the_same_content(kind, path, tmp_path):
    _saves_back_unchanged(kind, path, tmp_path)


def test_the_committed_axbench_scores_read_as_attributes():
    scores = AxBenchScores.load(ROOT / "results/axbench_l10/scores.json")
    assert scores.n_concepts == 5 and list(scores.by_method()) == METHODS
    prosv = scores.by_method()["prosv"]
    assert isinstance(prosv, SavedMethodScore) and isinstance(prosv.overall, Estimate)
    assert prosv.n_answers == 50 and prosv.overall.n == 5
    assert prosv.overall.low <= prosv.overall.mean <= prosv.overall.high
    assert prosv.parse_failures is None  # saved before parse failures were counted
    diffmean = scores.by_method()["diffmean"].factors
    assert len(diffmean) == 5 and all(isinstance(f, float) for f in diffmean.values())
    assert all(f is None for f in prosv.factors.values())
    # the typed scores draw like the parsed JSON (the figures read either)
    assert isinstance(as_score(prosv), SavedScore) and as_score(prosv) is prosv
    steering_scores_figure(scores.methods, "typed")
    steering_scores_figure(_committed_scores(), "parsed JSON")


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def _committed_scores() -> list:
    return json.loads((ROOT / "results/axbench_l10/scores.json").read_text())


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d[3].update(n_answers="50"), "methods.n_answers"),
        (lambda d: d[0]["overall"].update(mean="high"), "methods.overall.mean"),
        (lambda d: d[2]["factors"].update(x="big"), "methods.factors"),
        (lambda d: d[1].pop("fluency"), "methods.fluency"),
        (lambda d: d[0].update(colour="red"), "colour"),
    ],
    ids=["type", "estimate", "factor", "missing", "unknown"],
)
def test_a_bad_axbench_field_is_one_line_naming_file_and_field(tmp_path, edit, field):
    for layout in ("list", "object"):
        data = _committed_scores()
        edit(data)
        path = _write(
            tmp_path / "scores.json",
            data if layout == "list" else {"methods": data, "format_version": 1},
        )
        with pytest.raises(ResultFileError) as e:
            AxBenchScores.load(path)
        message = str(e.value)
        assert "\n" not in message and str(path) in message and field in message
        assert "AxBench scores" in message


def test_other_axbench_shapes_and_versions_are_refused(tmp_path):
    with pytest.raises(ResultFileError, match="is not AxBench scores"):
        AxBenchScores.load(_write(tmp_path / "a.json", "scores"))
    with pytest.raises(ResultFileError, match="format version 2"):
        AxBenchScores.load(
            _write(tmp_path / "b.json", {"methods": _committed_scores(), "format_version": 2})
        )
    (tmp_path / "c.json").write_text(json.dumps(_committed_scores())[:50])
    with pytest.raises(ResultFileError, match="not valid JSON"):
        AxBenchScores.load(tmp_path / "c.json")


def test_the_report_names_a_wrong_typed_axbench_field(tmp_path):
    folder = tmp_path / report_folders().axbench
    folder.mkdir()
    data = _committed_scores()
    data[3]["overall"]["low"] = [0.1]
    _write(folder / "scores.json", data)
    (folder / "rows.jsonl").write_text((ROOT / "results/axbench_l10/rows.jsonl").read_text())
    with pytest.raises(
        ResultFileError, match=r"scores\.json is not AxBench scores.*methods\.overall\.low"
    ):
        collect_claims(tmp_path, report_folders())


# -- a tiny prosv axbench-eval run -------------------------------------------------------------


def test_an_axbench_run_writes_scores_its_readers_load(tmp_path):
    axbench = make_axbench_folder(tmp_path / "axbench")
    out = tmp_path / "run"
    cfg = AxBenchEvalConfig(
        axbench=str(axbench), out=str(out), n_concepts=2, sizes="smoke", layer=1
    )
    scores = run_axbench_eval(cfg, model=make_tiny_model(), judge=HashJudge())
    data = json.loads((out / "scores.json").read_text())
    assert data["format_version"] == 1 and [s["method"] for s in data["methods"]] == METHODS
    assert data["methods"] == [s.to_dict() for s in scores]
    loaded = AxBenchScores.load(out / "scores.json")
    assert loaded == AxBenchScores.of(scores) and loaded.n_concepts == 2
    assert all(s.parse_failures is not None for s in loaded.methods)
    _saves_back_unchanged(AxBenchScores, out / "scores.json", tmp_path / "again")


# -- a tiny prosv reproduce run ----------------------------------------------------------------


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> tuple[Path, ReproduceSummary]:
    """A whole (tiny-model, hash-judge) reproduce run of 2 concepts and its returned summary."""
    root = tmp_path_factory.mktemp("reproduce")
    cfg = ReproduceConfig(make_setting(make_axbench_folder(root / "ax")), out_dir=str(root / "run"))
    summary = run_reproduce(
        cfg, model=make_tiny_model(), judge=HashJudge(), device=BIG_CPU, progress=False
    )
    return root / "run", summary


def test_a_reproduce_run_writes_results_that_round_trip(reproduced, tmp_path):
    run, summary = reproduced
    assert _reproduce_runs(run.parent) == [run]  # found as a committed run would be
    files = _reproduce_files(run)
    assert sorted({kind.__name__ for kind, _ in files}) == [
        "ConceptResult",
        "ConceptUtility",
        "ReproduceSummary",
        "UnsteeredUtility",
    ]
    assert len(files) == 2 + 2 + 1 + 1
    for i, (kind, path) in enumerate(files):
        assert json.loads(path.read_text())["format_version"] == 1
        _saves_back_unchanged(kind, path, tmp_path / str(i))
    # the returned summary is the saved one, and summary.md its text
    assert isinstance(summary, ReproduceSummary)
    assert ReproduceSummary.load(run / "summary.json") == summary
    assert (run / "summary.md").read_text() == format_summary(summary)
    assert [m.method for m in summary.methods] == METHODS
    assert summary.concepts == ((0, "the deep sea"), (1, "loops in code"))
    assert summary.by_method()["unsteered"].kl is None and summary.seconds is not None
    assert summary.by_method()["prosv"].alpha_mean is not None
    assert len(summary.per_concept) == 2 * 5 and summary.judge_parse_failures is not None
    result = ConceptResult.load(run / "concepts/0001/result.json")
    assert (result.concept_id, result.genre) == (1, "code")
    assert [s.method for s in result.scores] == METHODS
    assert set(result.train) == {"prosv", "fssv"} and result.v_norms["fssv"] > 0
    utility = ConceptUtility.load(run / "concepts/0001/utility.json")
    assert result.utility == utility.methods and utility.methods["prompt"].kl is not None
    assert set(json.loads((run / "concepts/0001/utility.json").read_text())) == {
        "prompt",
        "diffmean",
        "prosv",
        "fssv",
        "format_version",
    }


def test_files_saved_before_typed_results_still_load(reproduced, tmp_path):
    """Without ``format_version`` (and, in a summary, without the parse failures counted later)
    the files read as version 1; the summary text says what it lacks."""
    run, summary = reproduced
    for kind, path in _reproduce_files(run):
        data = json.loads(path.read_text())
        del data["format_version"]
        assert kind.load(_write(tmp_path / path.name, data)) == kind.load(path)
    old = summary.to_dict()
    del old["format_version"], old["judge_parse_failures"]
    for row in old["methods"] + old["per_concept"]:
        del row["parse_failures"]
    loaded = ReproduceSummary.load(_write(tmp_path / "summary.json", old))
    assert loaded.judge_parse_failures is None and loaded.methods[0].parse_failures is None
    assert loaded.to_dict() == {**old, "format_version": 1}
    text = format_summary(loaded)
    assert "not recorded in this summary" in text and "| - |" in text


@pytest.mark.parametrize(
    ("name", "edit", "field"),
    [
        ("summary.json", lambda d: d.update(layer="1"), '"layer"'),
        ("summary.json", lambda d: d["methods"][1].update(alpha_mean="x"), "methods.alpha_mean"),
        ("summary.json", lambda d: d["concepts"][0].__setitem__(0, "zero"), "concepts"),
        ("summary.json", lambda d: d["per_concept"][2].pop("concept_name"), "concept_name"),
        ("result.json", lambda d: d["utility"]["prosv"].update(kl=[1]), "utility.kl"),
        ("result.json", lambda d: d["train"]["fssv"].update(steps=1.5), "train.steps"),
        ("result.json", lambda d: d.update(extra=1), '"extra"'),
        ("utility.json", lambda d: d["prosv"]["accuracy"].update(n="4"), "methods.accuracy.n"),
        ("utility.json", lambda d: d.update(format_version=2), "format version 2"),
    ],
    ids=["type", "method", "concepts", "missing", "nested", "int", "unknown", "utility", "v2"],
)
def test_a_bad_reproduce_field_is_one_line_naming_file_and_field(
    reproduced, tmp_path, name, edit, field
):
    run, _ = reproduced
    kind = {"summary.json": ReproduceSummary, "result.json": ConceptResult}.get(
        name, ConceptUtility
    )
    source = run / name if name == "summary.json" else run / "concepts/0000" / name
    data = json.loads(source.read_text())
    edit(data)
    path = _write(tmp_path / name, data)
    with pytest.raises(ResultFileError) as e:
        kind.load(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message and field in message
    assert "prosv reproduce" in message or "format version" in message


def test_a_wrong_typed_concept_result_stops_a_resumed_run(reproduced, tmp_path):
    """A finished concept's result.json is read back typed on resume: a damaged one is named."""
    run, _ = reproduced
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    data = json.loads((copy / "concepts/0000/result.json").read_text())
    data["alphas"]["prosv"] = "big"
    _write(copy / "concepts/0000/result.json", data)
    cfg = ReproduceConfig(make_setting(run.parent / "ax"), out_dir=str(copy))
    with pytest.raises(ResultFileError, match=r"result\.json is not a concept result.*alphas"):
        run_reproduce(
            cfg, model=make_tiny_model(), judge=HashJudge(), device=BIG_CPU, progress=False
        )
