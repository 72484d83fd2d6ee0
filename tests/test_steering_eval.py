"""Steering evaluation mechanics on the tiny model with a rule-based test judge (not a real judge)."""

import json
import zlib
from collections import defaultdict

import pytest
import torch

from prosv_lens.evaluation.judges import Judge, JudgeItem, Rating
from prosv_lens.evaluation.records import ResultFileError, ResultLog
from prosv_lens.evaluation.steering_eval import (
    KEY_FIELDS,
    EvalConfig,
    Method,
    evaluate_steering,
    format_scores,
    selected_factor,
    split_tasks,
    summarize,
    tasks_from,
)
from prosv_lens.interventions import SteeringVector

INSTRUCTIONS = [f"Say something about item {i}." for i in range(8)]


class HashJudge(Judge):
    """Test double: ratings are a deterministic hash of the response text."""

    name = "hash-test-judge"

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls = 0
        self.fail_after = fail_after

    def rate(self, items: list[JudgeItem]) -> list[Rating]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        return [
            Rating(*(float(zlib.crc32(f"{k}{it.response}".encode()) % 3) for k in "cif"))
            for it in items
        ]


def _methods(tiny):
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(1))
    sv = SteeringVector(v / v.norm(), layer=1, positions="f2+l2", alpha=4.0)
    return [
        Method.unsteered(),
        Method.prompt(),
        Method.vector("prosv", sv),
        Method.factor_search("diffmean", sv.replace(positions="all"), [0.5, 2.0, 8.0]),
    ]


CFG = EvalConfig(max_new_tokens=4, batch_size=4, seed=0)


def test_rows_selection_and_summary(tiny, tmp_path):
    log = ResultLog(tmp_path / "rows.jsonl", KEY_FIELDS)
    rows = evaluate_steering(
        tiny, "apples", _methods(tiny), tasks_from(INSTRUCTIONS), HashJudge(), log, CFG
    )
    # 4 test answers per method, plus 3 factors x 4 selection answers for the factor search.
    assert len(rows) == 4 * 4 + 12
    by = defaultdict(list)
    for r in rows:
        by[(r["method"], r["split"])].append(r)
    assert {r["instruction_id"] for r in by[("prosv", "test")]} == {4, 5, 6, 7}
    sel = defaultdict(list)
    for r in by[("diffmean", "select")]:
        sel[r["factor"]].append(r["overall"])
    best = max(sorted(sel), key=lambda f: sum(sel[f]) / len(sel[f]))
    assert selected_factor(rows, "apples", "diffmean") == best
    assert {r["factor"] for r in by[("diffmean", "test")]} == {best}
    assert by[("diffmean", "test")][0]["alpha"] == pytest.approx(best)
    assert all(r["prompt"].startswith("You must answer") for r in by[("prompt", "test")])
    assert all(r["prompt"] == r["instruction"] for r in by[("prosv", "test")])
    scores = summarize(rows)
    assert [s.method for s in scores] == ["unsteered", "prompt", "prosv", "diffmean"]
    for s in scores:
        mine = [r["overall"] for r in by[(s.method, "test")]]
        assert s.overall.mean == pytest.approx(sum(mine) / len(mine)) and s.n_answers == 4
    assert "| diffmean |" in format_scores(scores)


def test_killed_run_resumes_without_lost_or_duplicated_rows(tiny, tmp_path):
    path = tmp_path / "rows.jsonl"
    complete = evaluate_steering(
        tiny, "apples", _methods(tiny), tasks_from(INSTRUCTIONS), HashJudge(),
        ResultLog(tmp_path / "ref.jsonl", KEY_FIELDS), CFG,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        evaluate_steering(
            tiny, "apples", _methods(tiny), tasks_from(INSTRUCTIONS), HashJudge(fail_after=3),
            ResultLog(path, KEY_FIELDS), CFG,
        )  # fmt: skip
    partial = len(path.read_text().splitlines())
    assert 0 < partial < len(complete)
    with path.open("a") as f:  # the process also died in the middle of writing a row
        f.write('{"suite": "steering", "concept": "app')
    judge = HashJudge()
    log = ResultLog(path, KEY_FIELDS)
    assert len(log.rows) == partial
    rows = evaluate_steering(
        tiny, "apples", _methods(tiny), tasks_from(INSTRUCTIONS), judge, log, CFG
    )
    key = lambda r: tuple(r[k] for k in KEY_FIELDS)  # noqa: E731
    assert sorted(map(key, rows)) == sorted(map(key, complete))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == len({key(r) for r in lines}) == len(complete)
    # Same seeds -> the resumed rows equal the uninterrupted run's.
    ref = {key(r): r["response"] for r in complete}
    assert all(ref[key(r)] == r["response"] for r in rows)
    calls = judge.calls
    evaluate_steering(
        tiny,
        "apples",
        _methods(tiny),
        tasks_from(INSTRUCTIONS),
        judge,
        ResultLog(path, KEY_FIELDS),
        CFG,
    )
    assert judge.calls == calls  # nothing left to do


def test_result_log_errors(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(ResultFileError, match=r"rows.jsonl:2: not valid"):
        ResultLog(path, ["a"])
    log = ResultLog(tmp_path / "ok.jsonl", ["a"])
    log.append([{"a": 1}])
    with pytest.raises(ResultFileError, match="already stored"):
        log.append([{"a": 1}])
    with pytest.raises(ValueError, match="cannot be split"):
        split_tasks(tasks_from(["only one"]), EvalConfig())
    with pytest.raises(ValueError, match="concept"):
        Method.prompt(template="no field")


def test_unsplit_suite_scores_every_task_and_refuses_selection(tiny, tmp_path):
    log = ResultLog(tmp_path / "rows.jsonl", KEY_FIELDS)
    methods = _methods(tiny)
    tasks = [
        t.__class__(t.instruction_id, t.instruction, "Avoid apples. " + t.prompt)
        for t in tasks_from(INSTRUCTIONS[:4])
    ]
    rows = evaluate_steering(
        tiny, "apples", methods[:3], tasks, HashJudge(), log, CFG, suite="robustness", split=False
    )
    assert len(rows) == 12 and {r["split"] for r in rows} == {"test"}
    assert all(
        r["prompt"].endswith(r["instruction"]) and r["prompt"] != r["instruction"] for r in rows
    )
    with pytest.raises(ValueError, match="one candidate"):
        evaluate_steering(tiny, "apples", methods, tasks, HashJudge(), log, CFG, split=False)
