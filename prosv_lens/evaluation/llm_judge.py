"""An LLM judge over any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama, ...).

Each item gets three requests, one per criterion (concept presence, instruction relevance,
fluency), each a single user message built from the project's own templates (:mod:`judge_prompts`). The judge
answers with a short reason and a final ``Rating: [[N]]`` line; :func:`parse_rating` reads it and
an unparseable or out-of-range answer counts as 0 (AxBench's rule), with the failure recorded in
the rating's details.

Contracts:

* The API key is read from the environment variable named by ``api_key_env`` at request time; it
  is never stored in the config, the results, the cache or an error message.
* Completions are cached on disk, one file per request, keyed by the sha256 of
  ``(base_url, model, temperature, prompt)``: a rerun never pays twice, and a rerun whose
  requests are all cached needs neither the key nor the network. Files are written atomically
  (temp file + rename), so concurrent runs and crashes leave whole entries; an entry that cannot
  be read is ignored and fetched again.
* 429, 5xx, timeouts and connection errors are retried with exponential back-off and jitter,
  honouring ``Retry-After``; any other 4xx fails at once with a :class:`JudgeError` that says
  what to fix.
* A judge that answers nothing usable stops the run instead of scoring everything 0: when more
  than ``max_parse_failure_rate`` of the replies cannot be parsed, in one :meth:`LLMJudge.rate`
  call or over all the judge's calls so far, once at least :data:`MIN_REPLIES_CHECKED` replies
  are counted (one bad reply out of two is noise, not a broken judge), :meth:`LLMJudge.rate`
  raises :class:`JudgeError` before returning any rating. The unparseable completions of that
  call are dropped from the cache first (the parseable ones stay), so a rerun after fixing the
  model or endpoint asks again rather than replaying them. Below the threshold the failures are
  kept in each rating's details and reported as a rate by the summaries.
"""

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from prosv_lens.errors import ConfigError, JudgeError
from prosv_lens.evaluation.judge_prompts import PROMPT_VERSION, judge_prompt, parse_rating
from prosv_lens.evaluation.judges import CRITERIA, Judge, JudgeItem, Rating
from prosv_lens.models import default_cache_dir
from prosv_lens.safe_io import write_text
from prosv_lens.validate import in_range, integer

logger = logging.getLogger(__name__)


def _env_default(name: str, fallback: str) -> str:
    return os.environ.get(name) or fallback


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MAX_PARSE_FAILURE_RATE_ENV = "PROSV_JUDGE_MAX_PARSE_FAILURE_RATE"
DEFAULT_MAX_PARSE_FAILURE_RATE = 0.2
MIN_REPLIES_CHECKED = 12
"""Replies (4 answers x 3 criteria) counted before the parse-failure rate can stop a run."""


def check_parse_failure_rate(value: object, source: str = "max_parse_failure_rate") -> float:
    """``value`` as a float if it is a rate in [0, 1]; else a :class:`ConfigError` naming
    ``source`` (the setting or the environment variable it came from)."""
    try:
        rate = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        rate = float("nan")
    if not 0.0 <= rate <= 1.0:  # also refuses NaN
        raise ConfigError(
            f"{source} must be a rate in [0, 1] (the share of judge replies that may be "
            f"unparseable before the run stops), got {value!r}: use e.g. 0.2"
        )
    return rate


def _env_parse_failure_rate() -> float:
    value = os.environ.get(MAX_PARSE_FAILURE_RATE_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_PARSE_FAILURE_RATE
    return check_parse_failure_rate(value, f"${MAX_PARSE_FAILURE_RATE_ENV}")


@dataclass(frozen=True)
class LLMJudgeConfig:
    """Where the judge runs and how it is called.

    Attributes:
        base_url: the OpenAI-compatible API root (``$PROSV_JUDGE_BASE_URL`` or OpenAI's); the
            judge POSTs to ``{base_url}/chat/completions``. A trailing ``/`` is dropped.
        model: the judge model (``$PROSV_JUDGE_MODEL`` or ``gpt-4o-mini``).
        api_key_env: the NAME of the environment variable holding the key (never the key);
            None for a local server that needs no key.
        temperature: sampling temperature (0 makes the judge as repeatable as the server allows).
        max_tokens: completion length cap; None leaves it to the server.
        timeout_s: per-request timeout in seconds.
        max_retries: retries after the first try on 429 / 5xx / timeout / connection error.
        backoff_s: base of the exponential back-off: try k waits about backoff_s * 2**k seconds.
        concurrency: requests in flight at once (threads).
        cache_dir: completion cache; None means ``$PROSV_CACHE/judge`` or
            ``~/.cache/prosv_lens/judge``.
        max_parse_failure_rate: the largest share of replies without a readable rating that is
            tolerated (``$PROSV_JUDGE_MAX_PARSE_FAILURE_RATE`` or 0.2); above it
            :meth:`LLMJudge.rate` raises :class:`JudgeError`. 1 never stops; 0 stops at the
            first failure (once :data:`MIN_REPLIES_CHECKED` replies are counted). Checked to be
            in [0, 1] when the judge is built (and when read from the environment). It changes
            no rating, so it is not part of the judge's name or cache keys.
    """

    base_url: str = field(
        default_factory=lambda: _env_default("PROSV_JUDGE_BASE_URL", "https://api.openai.com/v1")
    )
    model: str = field(default_factory=lambda: _env_default("PROSV_JUDGE_MODEL", "gpt-4o-mini"))
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int | None = 256
    timeout_s: float = 60.0
    max_retries: int = 6
    backoff_s: float = 1.0
    concurrency: int = 8
    cache_dir: str | None = None
    max_parse_failure_rate: float = field(default_factory=_env_parse_failure_rate)

    def __post_init__(self) -> None:
        """Raises ConfigError (a ValueError) naming the field, its value and the fix; numbers
        must be finite ($PROSV_JUDGE_BASE_URL / $PROSV_JUDGE_MODEL feed ``base_url`` / ``model``)."""
        if not isinstance(self.base_url, str) or not re.match(r"https?://[^/\s]+", self.base_url):
            raise ConfigError(
                f"base_url {self.base_url!r} is not an http(s) URL: use e.g. "
                "https://api.openai.com/v1 or http://localhost:8000/v1 (PROSV_JUDGE_BASE_URL)"
            )
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(
                "model is empty: name the judge model, e.g. gpt-4o-mini (PROSV_JUDGE_MODEL)"
            )
        if self.api_key_env is not None and not _ENV_NAME.fullmatch(str(self.api_key_env)):
            shown = "a key" if str(self.api_key_env).startswith("sk-") else repr(self.api_key_env)
            raise ConfigError(
                f"api_key_env must be the NAME of an environment variable such as OPENAI_API_KEY, "
                f"not {shown}: put the key itself in that variable"
            )
        in_range("temperature", self.temperature, 0.0, 2.0, hint="0 is the repeatable choice")
        if self.max_tokens is not None:
            integer("max_tokens", self.max_tokens, 1)
        in_range("timeout_s", self.timeout_s, 0.0, low_open=True, hint="e.g. 60")
        integer("max_retries", self.max_retries, 0)
        in_range("backoff_s", self.backoff_s, 0.0, hint="e.g. 1.0")
        integer("concurrency", self.concurrency, 1)
        check_parse_failure_rate(self.max_parse_failure_rate)

    def resolved_cache_dir(self) -> Path:
        """``cache_dir``, or the default under ``$PROSV_CACHE`` / ``~/.cache/prosv_lens``."""
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir() / "judge"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "LLMJudgeConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown LLMJudgeConfig keys {unknown}: known keys are {sorted(known)}"
            )
        return cls(**data)


class _CompletionCache:
    """One JSON file per request under ``root/<key[:2]>/<key>.json``, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached completion text, or None when absent or unreadable (then it is refetched)."""
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry.get("key") == key and isinstance(entry.get("completion"), str):
                return entry["completion"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError) as exc:
            logger.warning("ignoring unreadable judge cache entry %s (%s); refetching", path, exc)
            return None
        logger.warning("ignoring malformed judge cache entry %s; refetching", path)
        return None

    def put(self, key: str, completion: str, rating: float | None) -> None:
        """Store a completion; a crash mid-write leaves the old entry or none, never half a file."""
        entry = {"key": key, "completion": completion, "rating": rating, "prompts": PROMPT_VERSION}
        write_text(self._path(key), json.dumps(entry))

    def drop(self, key: str) -> None:
        """Forget a completion (it will be fetched again); absent entries are fine."""
        self._path(key).unlink(missing_ok=True)


def cache_key(config: LLMJudgeConfig, prompt: str) -> str:
    """sha256 of (base_url, model, temperature, prompt): what decides the completion."""
    payload = json.dumps([config.base_url, config.model, config.temperature, prompt])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


_MAX_RETRY_AFTER_S = 120.0


def _retry_after_s(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), capped; else None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_S)


def _body_excerpt(response: httpx.Response) -> str:
    return " ".join(response.text.split())[:300]


class LLMJudge(Judge):
    """Rates responses with a chat model behind an OpenAI-compatible ``/chat/completions``.

    Args:
        config: endpoint, model and call settings; None uses the defaults (and env variables).

    :meth:`rate` makes at most three requests per distinct item (fewer when cached) and does not
    mutate its input. The judge counts the replies it could not parse over its lifetime
    (:attr:`parse_failures`).

    Raises:
        ConfigError: ``config.max_parse_failure_rate`` is not in [0, 1].
    """

    def __init__(self, config: LLMJudgeConfig | None = None) -> None:
        self.config = config if config is not None else LLMJudgeConfig()
        check_parse_failure_rate(self.config.max_parse_failure_rate)
        self.cache = _CompletionCache(self.config.resolved_cache_dir())
        self._checked = False
        self._replies = 0
        self._failed = 0
        self._example = ""  # the latest unparseable reply, for the error message

    @property
    def parse_failures(self) -> tuple[int, int]:
        """(unparseable replies, replies) over every :meth:`rate` call of this judge."""
        return self._failed, self._replies

    @property
    def name(self) -> str:  # type: ignore[override]
        c = self.config
        return f"llm:{c.model}@{c.base_url}:T={c.temperature}:{PROMPT_VERSION}"

    # -- preflight ---------------------------------------------------------------------------

    def _api_key(self) -> str | None:
        env = self.config.api_key_env
        if env is None:
            return None
        key = os.environ.get(env, "").strip()
        if not key:
            raise JudgeError(
                f"the LLM judge needs an API key in ${env}, which is not set: run "
                f"`export {env}=<your key>` (or, for a local server that needs no key, set "
                "api_key_env=None)"
            )
        return key

    def _headers(self) -> dict[str, str]:
        key = self._api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def check(self) -> None:
        """Fail fast: the key is set and ``{base_url}/models`` answers (404 counts as reachable).

        Raises:
            JudgeError: missing key, rejected key (401/403) or unreachable endpoint.
        """
        headers = self._headers()
        url = f"{self.config.base_url}/models"
        try:
            response = httpx.get(url, headers=headers, timeout=min(self.config.timeout_s, 10.0))
        except httpx.TransportError as exc:
            raise JudgeError(
                f"cannot reach the judge endpoint {self.config.base_url} ({type(exc).__name__}: "
                f"{exc}): start the server, or fix base_url (default: $PROSV_JUDGE_BASE_URL)"
            ) from exc
        if response.status_code in (401, 403):
            raise self._http_error(response, url)
        self._checked = True

    def _http_error(self, response: httpx.Response, url: str) -> JudgeError:
        status, env = response.status_code, self.config.api_key_env or "the key variable"
        fixes = {
            401: f"the endpoint rejected the API key; set a valid key in ${env}",
            403: f"the key is not allowed to use model {self.config.model!r}; check its access",
            404: "no such endpoint or model; check base_url (usually ending in /v1) and model",
        }
        fix = fixes.get(status, "the endpoint refused the request; see its message")
        return JudgeError(
            f"{url} answered HTTP {status}: {fix}. Server said: {_body_excerpt(response)}"
        )

    # -- requests ----------------------------------------------------------------------------

    def _complete(self, client: httpx.Client, prompt: str) -> str:
        """One chat completion, retried on 429 / 5xx / timeouts / connection errors."""
        c = self.config
        url = f"{c.base_url}/chat/completions"
        payload: dict = {
            "model": c.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": c.temperature,
        }
        if c.max_tokens is not None:
            payload["max_tokens"] = c.max_tokens
        failure = ""
        for attempt in range(c.max_retries + 1):
            retry_after = None
            try:
                response = client.post(url, json=payload, headers=self._headers())
            except httpx.TransportError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    return self._completion_text(response, url)
                if response.status_code != 429 and response.status_code < 500:
                    raise self._http_error(response, url)
                failure = f"HTTP {response.status_code}: {_body_excerpt(response)}"
                retry_after = _retry_after_s(response)
            if attempt == c.max_retries:
                break
            delay = c.backoff_s * 2**attempt * random.uniform(0.5, 1.5)
            delay = max(delay, retry_after) if retry_after is not None else delay
            logger.info("judge request failed (%s); retry %d in %.2fs", failure, attempt + 1, delay)
            time.sleep(delay)
        raise JudgeError(
            f"{url} failed {c.max_retries + 1} times; last error: {failure}. The endpoint is "
            "overloaded or down: retry later (cached ratings are kept), lower concurrency, or "
            "raise max_retries"
        )

    @staticmethod
    def _completion_text(response: httpx.Response, url: str) -> str:
        try:
            content = response.json()["choices"][0]["message"].get("content")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise JudgeError(
                f"{url} did not return an OpenAI-style chat completion ({type(exc).__name__}); "
                f"check base_url points at an OpenAI-compatible API. Body: {_body_excerpt(response)}"
            ) from exc
        return content if isinstance(content, str) else ""

    def _fetch_all(self, prompts: dict[str, str]) -> dict[str, str]:
        """Completions for ``{cache_key: prompt}``, each cached as soon as it arrives.

        The first request that fails for good stops the rest: queued ones never start.
        """
        out: dict[str, str] = {}
        stop = threading.Event()

        def complete(client: httpx.Client, prompt: str) -> str | None:
            if stop.is_set():
                return None
            try:
                return self._complete(client, prompt)
            except BaseException:
                stop.set()
                raise

        timeout = httpx.Timeout(self.config.timeout_s)
        with (
            httpx.Client(timeout=timeout) as client,
            ThreadPoolExecutor(max_workers=self.config.concurrency) as pool,
        ):
            futures = {pool.submit(complete, client, p): k for k, p in prompts.items()}
            try:
                for future in as_completed(futures):
                    text = future.result()
                    if text is not None:
                        out[futures[future]] = text
                        self.cache.put(futures[future], text, parse_rating(text))
            except BaseException:
                stop.set()
                raise
        return out

    # -- rating ------------------------------------------------------------------------------

    def rate(self, items: Sequence[JudgeItem]) -> list[Rating]:
        """One :class:`Rating` per item, in order.

        Cached completions are reused; when anything is missing, :meth:`check` runs first
        (once per judge). Unparseable completions count as 0. Each rating's details hold, per
        criterion, the raw completion, the parsed value (None if unparseable), the cache key
        and whether it came from the cache, plus ``parse_failures`` (criteria counted as 0).

        Raises:
            JudgeError: missing/rejected key, unreachable endpoint, retries exhausted, or more
                than ``max_parse_failure_rate`` of the replies unparseable (see the module
                docstring); then no rating is returned.
        """
        keys = [
            {cr: cache_key(self.config, judge_prompt(cr, item)) for cr in CRITERIA}
            for item in items
        ]
        prompts = {
            k[cr]: judge_prompt(cr, item)
            for item, k in zip(items, keys, strict=True)
            for cr in CRITERIA
        }
        completions: dict[str, str] = {}
        for key in prompts:
            hit = self.cache.get(key)
            if hit is not None:
                completions[key] = hit
        cached = set(completions)
        missing = {k: p for k, p in prompts.items() if k not in cached}
        if missing:
            if not self._checked:
                self.check()
            completions.update(self._fetch_all(missing))
        ratings = [self._rating(k, completions, cached) for k in keys]
        self._check_parse_failures(ratings, keys, completions)
        return ratings

    def _check_parse_failures(
        self, ratings: Sequence[Rating], keys: Sequence[dict[str, str]], completions: dict[str, str]
    ) -> None:
        """Count this call's unparseable replies; raise :class:`JudgeError` past the threshold."""
        failed = [keys[i][c] for i, r in enumerate(ratings) for c in r.parse_failures]
        replies = len(CRITERIA) * len(ratings)
        self._failed += len(failed)
        self._replies += replies
        if failed:
            self._example = " ".join(completions[failed[0]].split())[:160]
        limit = self.config.max_parse_failure_rate
        too_many = [
            (n, of)
            for n, of in ((len(failed), replies), (self._failed, self._replies))
            if of >= MIN_REPLIES_CHECKED and n / of > limit
        ]
        if not too_many:
            return
        for key in set(failed):
            self.cache.drop(key)
        n, of = too_many[0]
        raise JudgeError(
            f"{n} of {of} judge replies ({n / of:.0%}) could not be parsed (no 'Rating: [[N]]' "
            f"line), more than max_parse_failure_rate={limit:g} allows; e.g. {self._example!r}. "
            f"Check that the judge model ({self.config.model}, $PROSV_JUDGE_MODEL) at "
            f"{self.config.base_url} answers in that format, or raise the threshold "
            f"(${MAX_PARSE_FAILURE_RATE_ENV}); the unparseable replies were dropped from the cache"
        )

    def _rating(
        self, keys: dict[str, str], completions: dict[str, str], cached: set[str]
    ) -> Rating:
        details: dict = {"judge": self.name, "parse_failures": []}
        values: dict[str, float] = {}
        for criterion in CRITERIA:
            key = keys[criterion]
            parsed = parse_rating(completions[key])
            if parsed is None:
                details["parse_failures"].append(criterion)
            values[criterion] = parsed if parsed is not None else 0.0
            details[criterion] = {
                "completion": completions[key],
                "parsed": parsed,
                "cache_key": key,
                "cached": key in cached,
            }
        return Rating(values["concept"], values["instruct"], values["fluency"], details)
