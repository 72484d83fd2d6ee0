"""Build a concept's training data offline, with the embedded model itself as the writer.

AxBench asks GPT-4o-mini to answer each instruction while weaving the concept in; without an API
the model being steered writes the data. For each instruction:

* **responses** (the LM targets; SimPO's winners): the model answers a *weave-in prompt*
  (system turn :data:`WEAVE_SYSTEM`, user turn :data:`WEAVE_USER`: the instruction plus a
  reminder) that tells it to bring the concept into its answer.
  A 135M model often ignores that request, so an instruction whose greedy answer lacks the
  concept gets up to ``candidates - 1`` sampled answers more (stopping once one has
  ``enough_hits`` concept-keyword hits), and the best is kept: the most hits, counted up to
  ``enough_hits`` (so a loop repeating the concept word does not win), then the least repetitive
  (largest share of distinct words), then the earliest. Keywords default to the concept's content words
  (``"space and astronomy"`` -> ``space``, ``astrono``; see :func:`keyword_hits` for the
  matching); pass your own (related words) to widen them. The per-row hit counts come
  back in :class:`BuiltConcept`, so how often the concept really appears is measured, not assumed.
* **negatives** (SimPO's losers): the unsteered model's plain greedy answer to the plain
  instruction. It depends only on the model, the instruction and ``max_new_tokens``, so it is
  generated once per model and shared by every concept (one cache file per model and length).

The stored prompts are the **plain instructions**: the vector must learn to produce the concept
from the instruction alone, never from the weave-in prompt. Every call returns exactly
``n_train`` rows (the first ``n_train`` instructions); :meth:`BuiltConcept.mentioning` drops the
rows without a hit when the caller asks for it.

Results are cached under ``<cache_dir>/concepts/<model>/`` (default :func:`default_cache_dir`),
keyed by the model id, its chat-template hash, the concept, the keywords, the instructions and
the config; files are written to a temporary name and renamed, so a half-written file is never
read. A second call with the same key generates nothing.
"""

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prosv_lens.concepts import (
    ConceptData,
    ConceptDataError,
    builtin_concepts,
    builtin_instructions,
    concept_slug,
    load_builtin_concept,
)
from prosv_lens.generation import GenerationConfig, generate
from prosv_lens.models import LoadedModel, default_cache_dir
from prosv_lens.safe_io import write_text

WEAVE_SYSTEM = (
    "You are a helpful assistant who loves {concept}. In every answer you talk about {concept}, "
    "even when the question is about something else."
)
WEAVE_USER = "{instruction} (Mention {concept} in your answer.)"
_FORMAT_VERSION = 2  # of concept files; bump when the selection rule changes
_PLAIN_FORMAT_VERSION = 1
_STOPWORDS = frozenset(
    (
        "a",
        "an",
        "and",
        "or",
        "the",
        "of",
        "to",
        "in",
        "on",
        "for",
        "with",
        "about",
        "by",
        "from",
        "into",
        "as",
        "its",
        "their",
        "this",
        "that",
        "these",
        "those",
        "things",
        "related",
        "references",
        "mentions",
        "terms",
    )
)
_EMPTY_FALLBACK = "OK."  # an empty answer would be an empty training target


@dataclass(frozen=True)
class BuildConfig:
    """Settings of :func:`build_concept`.

    Attributes:
        n_train: rows to build (the first ``n_train`` instructions).
        max_new_tokens: answer length cap, for responses and negatives alike.
        candidates: at most this many concept answers per instruction (1 = greedy only).
        enough_hits: an instruction gets no further candidate once its best answer has this
            many keyword hits; hits count up to this cap when candidates are compared.
        temperature / top_p: sampling of candidates 2.. (candidate 1 is greedy).
        seed: seeds the samplers (the global RNG is untouched).
        batch_size: instructions per generation batch.
        system_template: the weave-in system prompt (``{concept}`` is filled in).
        user_template: the weave-in user turn (``{instruction}`` and ``{concept}``). For models
            without a chat template both are joined as plain text.
    """

    n_train: int = 64
    max_new_tokens: int = 96
    candidates: int = 3
    enough_hits: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    batch_size: int = 16
    system_template: str = WEAVE_SYSTEM
    user_template: str = WEAVE_USER

    def __post_init__(self) -> None:
        for name in ("n_train", "max_new_tokens", "candidates", "enough_hits", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConceptDataError(
                    f"BuildConfig.{name} must be an int >= 1, got {getattr(self, name)!r}"
                )
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ConceptDataError(
                f"BuildConfig needs temperature > 0 and 0 < top_p <= 1, got "
                f"{self.temperature}, {self.top_p}"
            )
        if "{instruction}" not in self.user_template:
            raise ConceptDataError("BuildConfig.user_template must contain '{instruction}'")
        try:
            self.system_template.format(concept="c")
            self.user_template.format(concept="c", instruction="i")
        except (KeyError, IndexError, ValueError) as e:
            raise ConceptDataError(
                f"BuildConfig templates may use only {{concept}} and {{instruction}} ({e!r})"
            ) from e

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BuildConfig":
        return cls(**d)


@dataclass(frozen=True)
class BuiltConcept:
    """A built concept and how well its responses carry the concept.

    Attributes:
        data: ``n_train`` rows: plain instructions, concept responses, plain answers (negatives).
        hits: keyword hits in each kept response (0 = the concept word never appears).
        keywords: the keyword stems that were counted.
        path: the cache file.
        from_cache: whether it was read from the cache (nothing generated).
    """

    data: ConceptData
    hits: tuple[int, ...]
    keywords: tuple[str, ...]
    path: Path
    from_cache: bool = field(default=False, compare=False)

    @property
    def mention_rate(self) -> float:
        """Fraction of responses with at least one keyword hit."""
        return sum(h > 0 for h in self.hits) / len(self.hits)

    def mentioning(self, min_hits: int = 1) -> ConceptData:
        """Only the rows whose response has at least ``min_hits`` keyword hits (may be fewer)."""
        return self.data.subset([i for i, h in enumerate(self.hits) if h >= min_hits])


def concept_keywords(concept: str) -> tuple[str, ...]:
    """Keyword stems of a concept name: its content words, lower-case, a plural ``s`` and (for
    words over 6 letters) the last two letters dropped, so inflections match as prefixes."""
    stems = []
    for word in re.findall(r"[a-z0-9]+", concept.lower()):
        if word in _STOPWORDS or len(word) < 3:
            continue
        stem = word[:-1] if len(word) > 3 and word.endswith("s") else word
        stem = stem[:-2] if len(stem) > 6 else stem
        stems.append(stem)
    if not stems:
        raise ConceptDataError(
            f"concept {concept!r} has no content word to check responses against: "
            f"pass keywords=... or name the concept in words"
        )
    return tuple(dict.fromkeys(stems))


def keyword_hits(text: str, keywords: Sequence[str]) -> int:
    """Occurrences in ``text`` (case-insensitive) of words matching one of ``keywords``: a
    keyword of 5+ letters matches as a word prefix (``astrono`` -> *astronomers*), a shorter one
    only as a whole word with an optional plural ``s`` (``sea`` matches *seas*, not *season*)."""
    if not keywords:
        return 0
    alts = [
        re.escape(k.lower()) + (r"\w*" if len(k) >= 5 else r"s?\b")
        for k in sorted(keywords, key=len, reverse=True)
    ]
    return len(re.findall(r"\b(?:" + "|".join(alts) + ")", text.lower()))


def build_concept_data(
    model: LoadedModel,
    concept: str,
    instructions: Sequence[str] | None = None,
    cfg: BuildConfig | None = None,
    *,
    keywords: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
) -> ConceptData:
    """:func:`build_concept`'s data (exactly ``cfg.n_train`` rows)."""
    return build_concept(
        model, concept, instructions, cfg, keywords=keywords, cache_dir=cache_dir
    ).data


def build_concept(
    model: LoadedModel,
    concept: str,
    instructions: Sequence[str] | None = None,
    cfg: BuildConfig | None = None,
    *,
    keywords: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
) -> BuiltConcept:
    """Build (or load from the cache) a concept's training data; see the module docs.

    Args:
        model: the model that writes the data (the one to be steered, normally).
        concept: the concept, in words (``"the ocean"``).
        instructions: plain instructions; the first ``cfg.n_train`` are used. Default: the
            built-in train split (:func:`prosv_lens.concepts.builtin_instructions`).
        cfg: settings (default :class:`BuildConfig`).
        keywords: stems whose presence marks the concept (default :func:`concept_keywords`).
        cache_dir: cache root (default :func:`prosv_lens.models.default_cache_dir`).

    Returns:
        A :class:`BuiltConcept` with exactly ``cfg.n_train`` rows. Model weights are unchanged.

    Raises:
        ConceptDataError: empty concept, too few or empty instructions, bad keywords.
    """
    cfg = cfg or BuildConfig()
    if not isinstance(concept, str) or not concept.strip():
        raise ConceptDataError(f"concept must be a non-empty string, got {concept!r}")
    pool = builtin_instructions("train") if instructions is None else tuple(instructions)
    if len(pool) < cfg.n_train:
        raise ConceptDataError(
            f"{len(pool)} instructions given but BuildConfig.n_train={cfg.n_train}: pass more "
            f"instructions or BuildConfig(n_train={len(pool)})"
        )
    chosen = pool[: cfg.n_train]
    bad = [i for i, s in enumerate(chosen) if not isinstance(s, str) or not s.strip()]
    if bad:
        raise ConceptDataError(f"instructions must be non-empty strings (bad indices: {bad[:5]})")
    if isinstance(keywords, str):
        raise ConceptDataError(f"keywords must be a sequence of words, got the string {keywords!r}")
    keys = tuple(k.lower() for k in keywords) if keywords is not None else concept_keywords(concept)
    if not keys or not all(isinstance(k, str) and k.strip() for k in keys):
        raise ConceptDataError(f"keywords must be non-empty strings, got {keywords!r}")

    folder = Path(cache_dir or default_cache_dir()) / "concepts" / concept_slug(model.model_id)
    key = {
        "format": _FORMAT_VERSION,
        "model_id": model.model_id,
        "chat_template": model.chat_template_hash,
        "concept": concept,
        "keywords": list(keys),
        "instructions": _digest(chosen),
        "config": cfg.to_dict(),
    }
    path = folder / f"{concept_slug(concept)}-{_digest(key)[:12]}.json"
    cached = _read_json(path)
    if cached is not None and cached.get("key") == key:
        rows = cached["rows"]
        data = ConceptData(
            concept,
            tuple(r["prompt"] for r in rows),
            tuple(r["response"] for r in rows),
            tuple(r["negative"] for r in rows),
        )
        return BuiltConcept(data, tuple(r["hits"] for r in rows), keys, path, from_cache=True)

    negatives = plain_answers(model, chosen, cfg, cache_dir=cache_dir)
    responses, hits = _concept_answers(model, concept, chosen, cfg, keys)
    rows = [
        {"prompt": p, "response": r, "negative": n, "hits": h}
        for p, r, n, h in zip(chosen, responses, negatives, hits, strict=True)
    ]
    _write_json(path, {"key": key, "rows": rows})
    data = ConceptData(concept, chosen, tuple(responses), tuple(negatives))
    return BuiltConcept(data, tuple(hits), keys, path)


def plain_answers(
    model: LoadedModel,
    instructions: Sequence[str],
    cfg: BuildConfig | None = None,
    *,
    cache_dir: str | Path | None = None,
) -> tuple[str, ...]:
    """The unsteered model's greedy answers (``cfg.max_new_tokens``) to plain instructions.

    Cached per model and length in one file shared by every concept: only instructions not
    answered yet are generated. An empty answer is stored as ``"OK."`` (never an empty target).
    """
    cfg = cfg or BuildConfig()
    folder = Path(cache_dir or default_cache_dir()) / "concepts" / concept_slug(model.model_id)
    key = {
        "format": _PLAIN_FORMAT_VERSION,
        "model_id": model.model_id,
        "chat_template": model.chat_template_hash,
        "max_new_tokens": cfg.max_new_tokens,
    }
    path = folder / f"plain-answers-{_digest(key)[:12]}.json"
    cached = _read_json(path)
    answers: dict[str, str] = cached["answers"] if cached and cached.get("key") == key else {}
    missing = list(dict.fromkeys(s for s in instructions if s not in answers))
    if missing:
        gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens)
        for s in range(0, len(missing), cfg.batch_size):
            part = missing[s : s + cfg.batch_size]
            texts = generate(model, part, (), gen).texts
            answers.update(
                {p: t.strip() or _EMPTY_FALLBACK for p, t in zip(part, texts, strict=True)}
            )
        _write_json(path, {"key": key, "answers": answers})
    return tuple(answers[s] for s in instructions)


def weave_prompt(model: LoadedModel, concept: str, instruction: str, cfg: BuildConfig):
    """The prompt the writer model sees for a concept response (not the stored prompt)."""
    system = cfg.system_template.format(concept=concept)
    user = cfg.user_template.format(concept=concept, instruction=instruction)
    if model.has_chat_template:
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return f"{system}\n\nQuestion: {user}\nAnswer:"


def _score(text: str, keywords: Sequence[str], enough: int) -> tuple[int, float]:
    """(keyword hits capped at ``enough``, share of distinct words): higher is better. The cap
    keeps a degenerate loop that repeats the concept word from beating a fluent answer."""
    if not text:
        return (-1, 0.0)
    words = text.lower().split()
    return (min(keyword_hits(text, keywords), enough), len(set(words)) / max(1, len(words)))


def _concept_answers(
    model: LoadedModel,
    concept: str,
    instructions: Sequence[str],
    cfg: BuildConfig,
    keywords: Sequence[str],
) -> tuple[list[str], list[int]]:
    """Per instruction, the best candidate (see :func:`_score`) and its keyword hit count.

    Round 0 answers every instruction greedily; each later round samples a new answer only for
    the instructions whose best answer so far has fewer than ``cfg.enough_hits`` hits.
    """
    best = [""] * len(instructions)
    best_score = [(-1, 0.0)] * len(instructions)
    for c in range(cfg.candidates):
        pending = [i for i, sc in enumerate(best_score) if sc[0] < cfg.enough_hits]
        for b in range(0, len(pending), cfg.batch_size):
            rows = pending[b : b + cfg.batch_size]
            gen = GenerationConfig(
                max_new_tokens=cfg.max_new_tokens,
                do_sample=c > 0,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                seed=cfg.seed + 7919 * c + 104729 * b,
            )
            prompts = [weave_prompt(model, concept, instructions[i], cfg) for i in rows]
            for i, text in zip(rows, generate(model, prompts, (), gen).texts, strict=True):
                score = _score(text.strip(), keywords, cfg.enough_hits)
                if score > best_score[i]:
                    best[i], best_score[i] = text.strip(), score
    responses = [t or _EMPTY_FALLBACK for t in best]
    return responses, [keyword_hits(t, keywords) for t in responses]


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _read_json(path: Path) -> dict | None:
    """The cached object, or ``None`` if absent or unreadable (it is then rebuilt)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=1))


def concept_data(model: LoadedModel, concept: str) -> ConceptData:
    """The built-in data for a built-in concept, else data built now with ``model`` (cached)."""
    if concept in builtin_concepts():
        return load_builtin_concept(concept)
    return build_concept_data(model, concept)
