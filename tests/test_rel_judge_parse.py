"""A judge that returns nothing usable stops the run; a few unparseable replies are reported.

The LLM judge talks to a fake OpenAI-compatible endpoint through ``httpx.MockTransport`` (no
socket, no key on the network): ``reply(prompt)`` decides each completion.
"""

import json
import threading
from collections.abc import Callable

import httpx
import pytest
import torch

from prosv_lens.errors import ConfigError, JudgeError
from prosv_lens.evaluation.judges import CRITERIA, JudgeItem
from prosv_lens.evaluation.llm_judge import LLMJudge, LLMJudgeConfig
from prosv_lens.evaluation.offline_judge import OfflineJudge
from prosv_lens.evaluation.records import ResultLog
from prosv_lens.evaluation.steering_eval import (
    KEY_FIELDS,
    EvalConfig,
    Method,
    evaluate_steering,
    format_scores,
    judge_parse_failures,
    rating_fields,
    summarize,
    tasks_from,
)
from prosv_lens.experiments.demo_report import parse_failure_lines
from prosv_lens.experiments.report import build_summary, format_summary
from prosv_lens.experiments.reproduce_results import (
    ConceptResult,
    SavedMethodScore,
    UnsteeredUtility,
    UtilityResult,
)
from prosv_lens.experiments.settings import get_setting
from prosv_lens.interventions import SteeringVector

KEY_ENV = "PROSV_TEST_JUDGE_KEY"
GARBAGE = "I would rather not put a number on this one.\nIt is a fine passage."
INSTRUCTIONS = [f"Say something about item {i}." for i in range(8)]
CFG = EvalConfig(max_new_tokens=4, batch_size=4, seed=0)


def good(prompt: str) -> str:
    return "Reasoning: fine.\nRating: [[2]]"


def bad(prompt: str) -> str:
    return GARBAGE


class Endpoint:
    """A fake ``/v1`` API: ``/models`` answers 404 (reachable), completions come from ``reply``."""

    def __init__(self) -> None:
        self.reply: Callable[[str], str] = good
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(404, json={"error": "no listing"})
        prompt = json.loads(request.content)["messages"][0]["content"]
        with self.lock:
            self.asked.append(prompt)
        message = {"role": "assistant", "content": self.reply(prompt)}
        return httpx.Response(200, json={"choices": [{"message": message}]})


@pytest.fixture
def endpoint(monkeypatch) -> Endpoint:
    fake = Endpoint()
    transport = httpx.MockTransport(fake)

    class Client(httpx.Client):  # a real client class: type-checked signatures still accept it
        def __init__(self, **kwargs) -> None:
            super().__init__(transport=transport, **kwargs)

    monkeypatch.setattr(httpx, "Client", Client)
    monkeypatch.setattr(httpx, "get", lambda url, **kw: Client().get(url, **kw))
    return fake


@pytest.fixture
def judge_for(endpoint, tmp_path, monkeypatch) -> Callable[..., LLMJudge]:
    monkeypatch.setenv(KEY_ENV, "test-key")
    monkeypatch.delenv("PROSV_JUDGE_MAX_PARSE_FAILURE_RATE", raising=False)

    def make(**overrides) -> LLMJudge:
        settings = {
            "base_url": "http://judge.test/v1",
            "model": "fake-judge",
            "api_key_env": KEY_ENV,
            "max_retries": 0,
            "concurrency": 2,
            "cache_dir": str(tmp_path / "cache"),
        }
        return LLMJudge(LLMJudgeConfig(**{**settings, **overrides}))

    return make


def _items(n: int) -> list[JudgeItem]:
    return [JudgeItem(f"Task {i}.", f"A reply about tea number {i}.", "tea") for i in range(n)]


def _methods(tiny) -> list[Method]:
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(1))
    return [Method.unsteered(), Method.vector("prosv", SteeringVector(v, layer=1, alpha=2.0))]


# -- all replies unparseable: the run stops, nothing is scored --------------------------------


def test_all_unparseable_replies_raise_one_line_with_count_example_and_fix(endpoint, judge_for):
    endpoint.reply = bad
    with pytest.raises(JudgeError) as caught:
        judge_for().rate(_items(4))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("12 of 12 judge replies (100%) could not be parsed")
    assert "I would rather not put a number on this one. It is a fine passage." in message
    assert "PROSV_JUDGE_MODEL" in message and "PROSV_JUDGE_MAX_PARSE_FAILURE_RATE" in message
    assert "max_parse_failure_rate=0.2" in message


def test_an_evaluation_with_an_unusable_judge_stops_before_writing_any_score(
    tiny, endpoint, judge_for, tmp_path
):
    endpoint.reply = bad
    log = ResultLog(tmp_path / "rows.jsonl", KEY_FIELDS)
    with pytest.raises(JudgeError, match=r"12 of 12 judge replies"):
        evaluate_steering(
            tiny, "tea", _methods(tiny), tasks_from(INSTRUCTIONS), judge_for(), log, CFG
        )
    assert log.rows == [] and ResultLog(tmp_path / "rows.jsonl", KEY_FIELDS).rows == []


def test_below_the_minimum_count_failures_are_recorded_then_the_running_total_stops(
    endpoint, judge_for
):
    endpoint.reply = bad
    judge = judge_for()
    ratings = judge.rate(_items(2))  # 6 replies: too few to judge the judge
    assert [r.overall for r in ratings] == [0.0, 0.0]
    assert all(r.parse_failures == CRITERIA for r in ratings)
    assert judge.parse_failures == (6, 6)
    with pytest.raises(JudgeError, match=r"12 of 12 judge replies"):
        judge.rate(_items(4)[2:])  # 6 more: the judge's total reaches the minimum


def test_a_fixed_endpoint_resumes_from_the_cache_and_asks_only_the_dropped_replies(
    endpoint, judge_for
):
    endpoint.reply = lambda p: GARBAGE if p.startswith("You are grading a reply") else good(p)
    with pytest.raises(JudgeError, match=r"4 of 12 judge replies \(33%\)"):
        judge_for().rate(_items(4))
    assert len(endpoint.asked) == 12
    endpoint.reply = good  # the endpoint now answers in the rating format
    endpoint.asked.clear()
    ratings = judge_for().rate(_items(4))
    assert len(endpoint.asked) == 4  # the 8 parseable replies came from the cache
    assert all(r.overall == 2.0 and not r.parse_failures for r in ratings)
    assert all(
        r.details["concept"]["cached"] and not r.details["instruct"]["cached"] for r in ratings
    )


def test_threshold_one_keeps_axbench_scoring_and_the_setting_is_validated(
    endpoint, judge_for, monkeypatch
):
    endpoint.reply = bad
    ratings = judge_for(max_parse_failure_rate=1.0).rate(_items(4))
    assert [r.overall for r in ratings] == [0.0] * 4
    for value in (1.5, -0.1, float("nan")):
        with pytest.raises(ConfigError, match=r"max_parse_failure_rate must be a rate in \[0, 1\]"):
            judge_for(max_parse_failure_rate=value)
    monkeypatch.setenv("PROSV_JUDGE_MAX_PARSE_FAILURE_RATE", "0.5")
    assert LLMJudgeConfig().max_parse_failure_rate == 0.5
    monkeypatch.setenv("PROSV_JUDGE_MAX_PARSE_FAILURE_RATE", "lots")
    with pytest.raises(ConfigError, match=r"\$PROSV_JUDGE_MAX_PARSE_FAILURE_RATE must be a rate"):
        LLMJudgeConfig()


# -- a few unparseable replies: reported in every summary -------------------------------------


def _partly_bad(prompt: str) -> str:
    """Unparseable for the relevance criterion of item 5 only: 1 of 12 replies per batch."""
    return GARBAGE if "Request:\n<<<\nSay something about item 5." in prompt else good(prompt)


def test_a_few_unparseable_replies_are_counted_and_reported(tiny, endpoint, judge_for, tmp_path):
    endpoint.reply = _partly_bad
    log = ResultLog(tmp_path / "rows.jsonl", KEY_FIELDS)
    tasks = tasks_from(INSTRUCTIONS)
    rows = evaluate_steering(tiny, "tea", _methods(tiny), tasks, judge_for(), log, CFG)
    scores = summarize(rows)
    for s in scores:  # 4 test answers each, the instruct reply of item 5 unparseable
        assert s.parse_failures.replies == 12 and s.parse_failures.failed == 1
        assert dict(s.parse_failures.by_criterion) == {"concept": 0, "instruct": 1, "fluency": 0}
        assert s.to_dict()["parse_failures"]["rate"] == pytest.approx(1 / 12)
    assert "| 8.3% (1/12) |" in format_scores(scores)
    total = judge_parse_failures(rows)
    assert (total.failed, total.replies) == (2, 24)
    (line,) = parse_failure_lines(rows)
    assert line.startswith("- steering: 2 of 24 judge replies (8.3%) could not be parsed")
    assert "instruct 2" in line

    est = scores[0].overall
    results = [
        ConceptResult(
            concept_id=0,
            concept="tea",
            genre="text",
            data_sha256="0" * 64,
            diffmean_factor=None,
            scores=tuple(SavedMethodScore.of(s) for s in scores),
            alphas={"prosv": 2.0},
            v_norms={},
            train={},
            utility={"prosv": UtilityResult(est, est)},
            seconds={},
        )
    ]
    fingerprint = {
        "model": tiny.model_id,
        "dtype": "float32",
        "layer": 1,
        "data_source": "test",
        "judge": "fake-judge",
    }
    summary = build_summary(
        get_setting("smollm2-l12"), fingerprint, results, rows, UnsteeredUtility(est)
    )
    assert summary.judge_parse_failures is not None and summary.judge_parse_failures.failed == 2
    first = summary.methods[0].parse_failures
    assert first is not None and first.failed == 1
    text = format_summary(summary)
    assert "Judge: 2 of 24 judge replies (8.3%) could not be parsed" in text
    assert "| 8.3% (1/12) |" in text


def test_the_offline_judge_never_fails_to_parse():
    items = [
        JudgeItem("Name a drink.", "Green tea is a calm drink.", "tea"),
        JudgeItem("Say hi.", "Hello there, friend.", "tea"),
    ]
    ratings = OfflineJudge().rate(items)
    key = {"suite": "steering", "split": "test", "method": "m", "concept": "tea", "factor": None}
    rows = [{**key, **rating_fields(r)} for r in ratings]
    (score,) = summarize(rows)
    assert (score.parse_failures.failed, score.parse_failures.replies) == (0, 6)
    assert score.parse_failures.rate == 0.0 and judge_parse_failures(rows).rate == 0.0
    assert "| 0.0% (0/6) |" in format_scores([score])
