"""The LLM judge against a local fake OpenAI-compatible server (no network, no key needed)."""

import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from prosv_lens.errors import JudgeError
from prosv_lens.evaluation.judge_prompts import (
    PROMPT_VERSION,
    TEMPLATES,
    judge_prompt,
    parse_rating,
)
from prosv_lens.evaluation.judges import CRITERIA, JudgeItem
from prosv_lens.evaluation.llm_judge import LLMJudge, LLMJudgeConfig, cache_key

KEY_ENV = "PROSV_TEST_JUDGE_KEY"
KEY = "test-key-123"


def _criterion_of(prompt: str) -> str:
    (criterion,) = [c for c, t in TEMPLATES.items() if prompt.startswith(t[:80])]
    return criterion


def _between(prompt: str, label: str) -> str:
    return prompt.split(f"{label}:\n<<<\n", 1)[1].split("\n>>>", 1)[0]


def fake_rating(prompt: str) -> str:
    """The fake judge: concept 2 if the concept word is in the passage else 0; instruct 1 if the
    reply says "off-topic" else 2; fluency 0 if it says "blah blah" else 2. A passage with
    "GARBAGE" gets a completion without any rating."""
    criterion = _criterion_of(prompt)
    text = _between(prompt, "Reply" if criterion == "instruct" else "Passage")
    if "GARBAGE" in text:
        return "I cannot decide on a number here."
    if criterion == "concept":
        concept = prompt.split("Concept: ", 1)[1].split("\n", 1)[0]
        value = 2 if concept.lower() in text.lower() else 0
    elif criterion == "instruct":
        value = 1 if "off-topic" in text else 2
    else:
        value = 0 if "blah blah" in text else 2
    return f"Reasoning: looked at the {criterion}.\nRating: [[{value}]]"


class FakeServer:
    """Counts requests by path; ``plan`` is a queue of (status, headers) answers served before
    normal ones; ``always`` forces a status; ``delay_first`` sleeps on the first completion."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.plan: list[tuple[int, dict]] = []
        self.always: int | None = None
        self.delay_first = 0.0
        self.delay = 0.0
        self.models_status = 404
        self.auth: set[str] = set()
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                server.counts[self.path] += 1
                self._send(server.models_status, {"error": "no models listing"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.counts[self.path] += 1
                    server.auth.add(self.headers.get("Authorization", ""))
                    first = server.counts[self.path] == 1
                    planned = server.plan.pop(0) if server.plan else None
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay + (server.delay_first if first else 0.0))
                    if self.path != "/v1/chat/completions":
                        return self._send(404, {"error": "not found"})
                    status = server.always or (planned[0] if planned else 200)
                    if status != 200:
                        return self._send(
                            status, {"error": f"status {status}"}, planned and planned[1]
                        )
                    text = fake_rating(body["messages"][0]["content"])
                    self._send(
                        200, {"choices": [{"message": {"role": "assistant", "content": text}}]}
                    )
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def completions(self) -> int:
        return self.counts["/v1/chat/completions"]


@pytest.fixture
def server():
    fake = FakeServer()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()
    fake.thread.join()


@pytest.fixture
def judge_for(server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)

    def make(**overrides) -> LLMJudge:
        settings = {
            "base_url": server.url,
            "model": "fake-judge",
            "api_key_env": KEY_ENV,
            "timeout_s": 5.0,
            "max_retries": 3,
            "backoff_s": 0.001,
            "concurrency": 1,
            "cache_dir": str(tmp_path / "cache"),
        }
        return LLMJudge(LLMJudgeConfig(**{**settings, **overrides}))

    return make


ITEMS = [
    JudgeItem("Describe a sunny day.", "The ocean glitters under the sun.", "ocean"),
    JudgeItem("Name a fruit.", "Apples are fruit; also off-topic chatter.", "apples"),
    JudgeItem("Say hello.", "blah blah blah blah", "greeting"),
    JudgeItem("Write a poem.", "Roses bloom in spring.", "mountains"),
]
EXPECTED = [(2.0, 2.0, 2.0, 2.0), (2.0, 1.0, 2.0, 1.5), (0.0, 2.0, 0.0, 0.0), (0.0, 2.0, 2.0, 0.0)]


def _scores(ratings) -> list[tuple[float, float, float, float]]:
    return [(r.concept, r.instruct, r.fluency, pytest.approx(r.overall)) for r in ratings]


def test_rates_end_to_end_with_harmonic_mean(server, judge_for):
    judge = judge_for()
    ratings = judge.rate(ITEMS)
    assert _scores(ratings) == EXPECTED
    assert server.completions == 3 * len(ITEMS)
    assert server.auth == {f"Bearer {KEY}"}
    details = ratings[1].details
    assert details["parse_failures"] == [] and details["judge"] == judge.name
    assert (
        details["instruct"]["parsed"] == 1.0
        and "Rating: [[1]]" in details["instruct"]["completion"]
    )
    assert PROMPT_VERSION in judge.name and "fake-judge" in judge.name


def test_prompts_carry_the_item_and_the_answer_format():
    item = ITEMS[0]
    for criterion in CRITERIA:
        prompt = judge_prompt(criterion, item)
        assert item.response in prompt and prompt.rstrip().endswith("Rating: [[N]]")
    assert item.concept in judge_prompt("concept", item)
    assert item.instruction in judge_prompt("instruct", item)
    assert item.instruction not in judge_prompt("fluency", item)
    with pytest.raises(ValueError, match="unknown criterion"):
        judge_prompt("style", item)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Reason.\nRating: [[2]]", 2.0),
        ("Rating: 1", 1.0),
        ("Rating: **2**", 2.0),
        ("**Rating:** 2", 2.0),
        ("**Rating**: [[0]]", 0.0),
        ('Rating: "1"', 1.0),
        ("Rating: '2'.", 2.0),
        ("Rating: `1`", 1.0),
        ("Rating: 2.", 2.0),
        ("Rating: 1.5", 1.5),
        ("Rating: 2/2", 2.0),
        ("Rating: [[1/2]]", 1.0),
        ("Rating: 2 (clearly present)", 2.0),
        ("rating: 0", 0.0),
        ("Rating:\n\n[[2]]", 2.0),
        ("Rating: [[0]] was wrong, on reflection.\nRating: [[2]]", 2.0),
        ("Rating: 2\nfinal Rating: 1", 1.0),
        ("No rating given.", None),
        ("Rating: [[N]]", None),
        ("Rating:", None),
        ("Rating: 3", None),
        ("Rating: 2.5", None),
        ("Rating: -1", None),
        ("Rating: 8/10", None),
        ("Rating: 1-2", None),
        ("Rating: 2.5.1", None),
        ("Rating: 2x", None),
        ("Rating: about 2", None),
        ("", None),
    ],
)
def test_parse_rating(text, expected):
    assert parse_rating(text) == expected


def test_unparseable_completion_counts_zero_and_is_recorded(judge_for):
    item = JudgeItem("Say something.", "GARBAGE output here", "garbage")
    (rating,) = judge_for().rate([item])
    assert (rating.concept, rating.instruct, rating.fluency, rating.overall) == (0, 0, 0, 0)
    assert rating.details["parse_failures"] == list(CRITERIA)
    assert rating.details["fluency"]["parsed"] is None
    assert rating.details["fluency"]["completion"] == "I cannot decide on a number here."


def test_429_is_retried_and_retry_after_is_honoured(server, judge_for):
    server.plan = [(429, {"Retry-After": "0.3"})]
    start = time.perf_counter()
    ratings = judge_for().rate(ITEMS[:1])
    assert time.perf_counter() - start >= 0.3  # back-off alone would be ~1 ms
    assert _scores(ratings) == EXPECTED[:1]
    assert server.completions == 3 + 1


def test_timeout_is_retried(server, judge_for):
    server.delay_first = 1.2  # the first completion cannot arrive within the timeout
    ratings = judge_for(timeout_s=0.5).rate(ITEMS[:1])
    assert _scores(ratings) == EXPECTED[:1]
    assert server.completions >= 3 + 1


def test_500_storm_exhausts_retries_with_clear_error(server, judge_for):
    server.always = 500
    with pytest.raises(JudgeError, match=r"failed 4 times; last error: HTTP 500"):
        judge_for(max_retries=3).rate(ITEMS[:1])
    assert server.completions == 4  # concurrency 1: the first item's first criterion, 1 + 3 tries


def test_401_fails_fast_with_key_message(server, judge_for):
    server.models_status = 401
    with pytest.raises(JudgeError, match=f"rejected the API key; set a valid key in \\${KEY_ENV}"):
        judge_for().rate(ITEMS[:1])
    assert server.completions == 0  # caught by check() on /models
    server.models_status = 404
    server.always = 401
    with pytest.raises(JudgeError, match=f"rejected the API key; set a valid key in \\${KEY_ENV}"):
        judge_for().rate(ITEMS[:1])
    assert server.completions == 1


def test_other_4xx_fails_fast_with_server_message(server, judge_for):
    server.plan = [(400, {})]
    with pytest.raises(JudgeError, match=r"HTTP 400.*status 400"):
        judge_for().rate(ITEMS[:1])
    assert server.completions == 1


def test_cache_rerun_pays_nothing_and_settings_change_misses(
    server, judge_for, monkeypatch, tmp_path
):
    first = judge_for().rate(ITEMS)
    assert server.completions == 12
    server.counts.clear()
    monkeypatch.delenv(KEY_ENV)  # a fully cached rerun needs neither the key nor the network
    again = judge_for().rate(ITEMS)
    assert sum(server.counts.values()) == 0
    assert _scores(again) == _scores(first)
    assert all(again[0].details[c]["cached"] for c in CRITERIA)
    assert KEY not in json.dumps([r.to_dict() for r in again])
    assert not any(KEY in f.read_text() for f in (tmp_path / "cache").rglob("*.json"))
    monkeypatch.setenv(KEY_ENV, KEY)
    judge_for(temperature=0.7).rate(ITEMS)
    assert server.completions == 12


def test_corrupt_cache_entry_is_refetched(server, judge_for, tmp_path):
    judge = judge_for()
    judge.rate(ITEMS[:1])
    key = cache_key(judge.config, judge_prompt("fluency", ITEMS[0]))
    path = tmp_path / "cache" / key[:2] / f"{key}.json"
    assert json.loads(path.read_text())["rating"] == 2.0
    path.write_text('{"key": "trunc')
    server.counts.clear()
    (rating,) = judge_for().rate(ITEMS[:1])
    assert server.completions == 1 and rating.fluency == 2.0
    assert not rating.details["fluency"]["cached"] and rating.details["concept"]["cached"]
    assert json.loads(path.read_text())["key"] == key
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_missing_key_fails_before_any_request(server, judge_for, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    judge = judge_for()
    with pytest.raises(JudgeError, match=f"export {KEY_ENV}="):
        judge.check()
    with pytest.raises(JudgeError, match=f"\\${KEY_ENV}, which is not set"):
        judge.rate(ITEMS)
    assert sum(server.counts.values()) == 0


def test_unreachable_endpoint_fails_with_url(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    judge = LLMJudge(LLMJudgeConfig(base_url=url, api_key_env=KEY_ENV, cache_dir=str(tmp_path)))
    with pytest.raises(JudgeError, match=f"cannot reach the judge endpoint {url}"):
        judge.rate(ITEMS[:1])


def test_check_treats_404_models_as_reachable(server, judge_for):
    judge_for().check()
    assert server.counts["/v1/models"] == 1


def test_concurrency_gives_same_results(server, judge_for, tmp_path):
    items = ITEMS * 3 + [JudgeItem(f"Task {i}.", f"Text {i} about tea.", "tea") for i in range(6)]
    serial = judge_for().rate(items)
    server.delay = 0.02
    parallel = judge_for(concurrency=6, cache_dir=str(tmp_path / "other")).rate(items)
    assert _scores(parallel) == _scores(serial)
    assert server.max_in_flight > 1
    assert server.completions == 2 * 3 * 10  # 10 distinct items; repeats are asked once


def test_config_validation_and_round_trip(monkeypatch):
    monkeypatch.setenv("PROSV_JUDGE_BASE_URL", "http://localhost:8000/v1/")
    monkeypatch.setenv("PROSV_JUDGE_MODEL", "local-model")
    config = LLMJudgeConfig(temperature=0.5)
    assert config.base_url == "http://localhost:8000/v1" and config.model == "local-model"
    assert LLMJudgeConfig.from_dict(config.to_dict()) == config
    monkeypatch.delenv("PROSV_JUDGE_BASE_URL")
    monkeypatch.delenv("PROSV_JUDGE_MODEL")
    assert LLMJudgeConfig().base_url == "https://api.openai.com/v1"
    assert LLMJudgeConfig().model == "gpt-4o-mini"
    monkeypatch.setenv("PROSV_CACHE", "/tmp/prosv-cache-test")
    assert str(LLMJudgeConfig().resolved_cache_dir()) == "/tmp/prosv-cache-test/judge"
    for bad, match in [
        ({"base_url": "api.openai.com"}, "not an http"),
        ({"api_key_env": "sk-abc123"}, "NAME of an environment variable"),
        ({"temperature": 3.0}, "temperature"),
        ({"concurrency": 0}, "concurrency"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout_s": 0.0}, "timeout_s"),
    ]:
        with pytest.raises(ValueError, match=match):
            LLMJudgeConfig(**bad)
    with pytest.raises(ValueError, match="unknown LLMJudgeConfig keys"):
        LLMJudgeConfig.from_dict({"api_key": "sk-oops"})
