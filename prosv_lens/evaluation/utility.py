"""Utility under steering: does a steering vector keep the model able to do ordinary tasks?

Two measures (paper §6.3 asks whether PrOSV keeps utility that FSSV destroys):

* **Task accuracy** (:func:`evaluate_utility`): greedy answers to items with a checkable answer,
  scored by the pure checkers of :mod:`prosv_lens.evaluation.checkers`. The built-in set
  (``resources/utility.json``, written for this project) holds simple facts, one-step arithmetic
  and instruction-following items sized for SmolLM2-135M-Instruct; tinyMMLU / tinyGSM8k map onto
  the same item format when the Hugging Face hub is reachable.
* **KL damage** (:func:`kl_damage`): how far steering moves the model's next-token distributions
  on text the *unsteered* model would write. It needs no answer key and no judge, and a zero
  vector gives exactly 0.
"""

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from prosv_lens.errors import BenchmarkUnavailableError, ProsvError  # noqa: F401 - re-exported
from prosv_lens.evaluation.checkers import CheckSpecError, run_check, validate_spec
from prosv_lens.evaluation.stats import Estimate, bootstrap_mean
from prosv_lens.generation import GenerationConfig, generate
from prosv_lens.interventions import AbstractIntervention, steering
from prosv_lens.models import LoadedModel
from prosv_lens.prompts import Prompt, TokenBatch, encode_prompts
from prosv_lens.types import Logits, PosMask
from prosv_lens.validate import integer

BUILTIN_UTILITY = Path(__file__).resolve().parents[1] / "resources" / "utility.json"
TINY_MMLU = "tinyBenchmarks/tinyMMLU"
TINY_GSM8K = "tinyBenchmarks/tinyGSM8k"
Interventions = AbstractIntervention | Sequence[AbstractIntervention] | None


@dataclass(frozen=True)
class UtilityItem:
    """One task with a checkable answer.

    Attributes:
        id: unique name within its set.
        prompt: the user turn the model answers (rendered with the chat template if it has one).
        spec: the checker spec, ``{"check": name, **arguments}`` (validated on construction).
        source: where the item comes from (``builtin``, ``tinyMMLU``, ...).
    """

    id: str
    prompt: str
    spec: Mapping[str, Any]
    source: str = "builtin"

    def __post_init__(self) -> None:
        if not self.id or not self.prompt:
            raise CheckSpecError(f"utility item {self.id!r} needs a non-empty id and prompt")
        try:
            validate_spec(self.spec)
        except CheckSpecError as e:
            raise CheckSpecError(f"utility item {self.id!r}: {e}") from None

    def is_correct(self, output: str) -> bool:
        return run_check(self.spec, output)


def load_utility_items(path: str | Path | None = None) -> list[UtilityItem]:
    """Items from a JSON file ``{"items": [{"id", "prompt", "check", ...}]}`` (default: built-in).

    Every key of an item other than ``id``, ``prompt`` and ``source`` goes into its checker spec.
    """
    path = Path(path) if path is not None else BUILTIN_UTILITY
    try:
        rows = json.loads(path.read_text())["items"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckSpecError(
            f"cannot read utility items from {path} ({type(e).__name__}: {e}): expected a JSON "
            'object {"items": [{"id": ..., "prompt": ..., "check": ..., ...}]}'
        ) from None
    items = [
        UtilityItem(
            str(r.get("id", "")),
            str(r.get("prompt", "")),
            {k: v for k, v in r.items() if k not in ("id", "prompt", "source")},
            str(r.get("source", "builtin")),
        )
        for r in rows
    ]
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise CheckSpecError(
            f"{path} repeats item ids: {sorted({i for i in ids if ids.count(i) > 1})}"
        )
    return items


# ---------------------------------------------------------------------------- tinyBenchmarks


def mmlu_item(row: Mapping[str, Any], index: int, *, few_shot: bool = False) -> UtilityItem:
    """A tinyMMLU row (``question``, ``choices``, ``answer`` as 0-3 or a letter,
    ``input_formatted``) as an item scored on the chosen option letter.

    ``few_shot=True`` uses the row's ``input_formatted`` (its fixed 5-shot text, ending in
    "Answer:"); otherwise a zero-shot prompt listing the options.
    """
    choices = list(row["choices"])
    letters = "ABCDEFGHIJ"[: len(choices)]
    answer = row["answer"]
    if isinstance(answer, str):
        letter = answer.strip().upper()
    else:
        letter = letters[int(answer)] if 0 <= int(answer) < len(letters) else str(answer)
    if not letter or letter not in letters:
        raise CheckSpecError(f"tinyMMLU row {index}: answer {answer!r} is not one of {letters}")
    if few_shot and row.get("input_formatted"):
        prompt = str(row["input_formatted"])
    else:
        options = "\n".join(f"{c}. {text}" for c, text in zip(letters, choices, strict=True))
        prompt = (
            f"{row['question'].strip()}\n\n{options}\n\n"
            "Reply with the letter of the correct option."
        )
    spec = {"check": "choice", "answer": letter, "options": letters}
    return UtilityItem(f"tinyMMLU-{index}", prompt, spec, "tinyMMLU")


def gsm8k_item(row: Mapping[str, Any], index: int, *, few_shot: bool = False) -> UtilityItem:
    """A tinyGSM8k row (``question``, ``answer`` ending in ``#### N``, ``input_formatted``) as an
    item scored on the last number of the output."""
    reference = str(row["answer"])
    if "####" not in reference:
        raise CheckSpecError(f"tinyGSM8k row {index}: answer has no '#### <number>' line")
    value = float(reference.rsplit("####", 1)[1].strip().replace(",", ""))
    if few_shot and row.get("input_formatted"):
        prompt = str(row["input_formatted"])
    else:
        prompt = f"{row['question'].strip()}\nSolve it step by step and end with the final number."
    spec = {"check": "number", "value": value, "mode": "last"}
    return UtilityItem(f"tinyGSM8k-{index}", prompt, spec, "tinyGSM8k")


def _hub_rows(repo: str, config: str, split: str, cache_dir: str | Path | None) -> list[dict]:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    fix = (
        "Use the built-in set instead (load_utility_items()), or go online "
        "(unset HF_HUB_OFFLINE) so the dataset can be downloaded once."
    )
    try:
        import datasets
    except ImportError:
        raise BenchmarkUnavailableError(
            f"loading {repo} needs the `datasets` package: `pip install datasets`. {fix}"
        ) from None
    try:
        data = datasets.load_dataset(repo, config, split=split, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; re-raised with the fix
        state = (
            "the hub is disabled (HF_HUB_OFFLINE=1)" if offline else "the hub did not provide it"
        )
        raise BenchmarkUnavailableError(
            f"cannot load {repo} ({config}/{split}): {state} and no local copy was found "
            f"({type(e).__name__}: {e}). {fix}"
        ) from e
    return [dict(r) for r in data]


def load_tiny_mmlu(
    *, limit: int | None = None, few_shot: bool = False, cache_dir: str | Path | None = None
) -> list[UtilityItem]:
    """tinyMMLU's 100 test questions as items (needs the hub once, or a ``datasets`` cache)."""
    rows = _hub_rows(TINY_MMLU, "all", "test", cache_dir)[:limit]
    return [mmlu_item(r, i, few_shot=few_shot) for i, r in enumerate(rows)]


def load_tiny_gsm8k(
    *, limit: int | None = None, few_shot: bool = False, cache_dir: str | Path | None = None
) -> list[UtilityItem]:
    """tinyGSM8k's 100 test problems as items (needs the hub once, or a ``datasets`` cache)."""
    rows = _hub_rows(TINY_GSM8K, "main", "test", cache_dir)[:limit]
    return [gsm8k_item(r, i, few_shot=few_shot) for i, r in enumerate(rows)]


# ---------------------------------------------------------------------------- task accuracy


def _check_sizes(max_new_tokens: int, batch_size: int) -> None:
    """The validation both decoding configs share (ConfigError naming the field and value)."""
    integer("max_new_tokens", max_new_tokens, 1)
    integer("batch_size", batch_size, 1)


@dataclass(frozen=True)
class UtilityConfig:
    """Greedy decoding settings for :func:`evaluate_utility`.

    Attributes:
        max_new_tokens: tokens generated per answer (32 fits the built-in set, whose answers
            come in the first sentence; worked GSM8K answers need a few hundred).
        batch_size: items per generation batch (items are grouped by prompt length).
        system: a system message for every item (``None``: the template's default).
        backend: generation backend: ``auto`` (default) is Hugging Face ``generate`` on a GPU,
            the bridge loop on a CPU (:class:`~prosv_lens.generation.GenerationConfig`).
    """

    max_new_tokens: int = 32
    batch_size: int = 16
    system: str | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        _check_sizes(self.max_new_tokens, self.batch_size)


@dataclass(frozen=True)
class UtilityRow:
    """One answered item."""

    id: str
    source: str
    prompt: str
    output: str
    correct: bool


@dataclass(frozen=True)
class UtilityResult:
    """Accuracy over items with a bootstrap CI, and every answer."""

    accuracy: Estimate
    rows: tuple[UtilityRow, ...] = field(repr=False)

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy.to_dict(), "rows": [asdict(r) for r in self.rows]}


def _as_list(interventions: Interventions) -> list[AbstractIntervention]:
    if interventions is None:
        return []
    if isinstance(interventions, AbstractIntervention):
        return [interventions]
    return list(interventions)


def _length_chunks(model: LoadedModel, prompts: Sequence[Prompt], size: int) -> list[list[int]]:
    """Indices grouped ``size`` at a time by token length (less padding per batch)."""
    tok = model.tokenizer
    lengths = [len(tok(p if isinstance(p, str) else str(p))["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    return [order[s : s + size] for s in range(0, len(order), size)]


def evaluate_utility(
    model: LoadedModel,
    interventions: Interventions,
    items: Sequence[UtilityItem],
    config: UtilityConfig | None = None,
) -> UtilityResult:
    """Answer every item greedily (steered if ``interventions`` is given) and check the answers.

    Rows come back in the order of ``items``; the accuracy CI is a bootstrap over items.
    Model weights are never modified.
    """
    cfg = config or UtilityConfig()
    if not items:
        raise ValueError("evaluate_utility needs at least one item")
    ivs = _as_list(interventions)
    gen_cfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens, backend=cfg.backend)
    outputs: dict[int, str] = {}
    for chunk in _length_chunks(model, [it.prompt for it in items], cfg.batch_size):
        batch = encode_prompts(model, [items[i].prompt for i in chunk], system=cfg.system)
        texts = generate(model, batch, ivs, gen_cfg).texts
        outputs.update(zip(chunk, texts, strict=True))
    rows = tuple(
        UtilityRow(it.id, it.source, it.prompt, outputs[i], it.is_correct(outputs[i]))
        for i, it in enumerate(items)
    )
    return UtilityResult(bootstrap_mean([float(r.correct) for r in rows]), rows)


# ---------------------------------------------------------------------------- KL damage


@dataclass(frozen=True)
class KLConfig:
    """Settings for :func:`kl_damage`.

    Attributes:
        max_new_tokens: length of the unsteered greedy continuation of each prompt.
        batch_size: prompts per forward pass.
        system: a system message for every prompt (``None``: the template's default).
        backend: generation backend of the unsteered continuations (``auto``: as
            :class:`UtilityConfig`).
    """

    max_new_tokens: int = 32
    batch_size: int = 8
    system: str | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        _check_sizes(self.max_new_tokens, self.batch_size)


@dataclass(frozen=True)
class KLDamage:
    """Mean KL(unsteered || steered) over continuation positions, in nats.

    Attributes:
        estimate: mean over prompts of each prompt's per-position mean KL, with a bootstrap CI.
        per_prompt: that per-prompt mean, in the order of the prompts.
        n_tokens: continuation positions measured (one per generated token).
        token_mean: mean over all measured positions pooled (long continuations weigh more).
    """

    estimate: Estimate
    per_prompt: tuple[float, ...]
    n_tokens: int
    token_mean: float

    @property
    def mean(self) -> float:
        return self.estimate.mean

    def to_dict(self) -> dict:
        return {**asdict(self), "estimate": self.estimate.to_dict()}


def continuation_batch(
    prompt: TokenBatch, tokens: torch.Tensor, lengths: Sequence[int]
) -> TokenBatch:
    """A left-padded prompt batch followed by generated tokens, for teacher forcing.

    Prompt columns (and so role spans and prompt-only positions) are unchanged; generated tokens
    are real non-prompt tokens; a row that stopped early is right-padded after its stop token.
    """
    keep = torch.arange(tokens.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    return TokenBatch(
        torch.cat([prompt.input_ids, tokens.to(prompt.input_ids.device)], dim=1),
        torch.cat([prompt.attention_mask, keep.long()], dim=1),
        torch.cat([prompt.prompt_mask, torch.zeros_like(keep)], dim=1),
        prompt.role_spans,
        prompt.texts,
    )


def predicting_mask(batch: TokenBatch) -> PosMask:
    """True at the columns whose logits predict a response token: the last prompt token and
    every response token but the last (column ``t`` predicts the token at ``t + 1``)."""
    mask = torch.zeros_like(batch.prompt_mask)
    mask[:, :-1] = batch.response_mask[:, 1:]
    return mask


def _logits(model: LoadedModel, batch: TokenBatch) -> Logits:
    return model.bridge(
        batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    )


def kl_damage(
    model: LoadedModel,
    interventions: Interventions,
    prompts: Sequence[Prompt],
    config: KLConfig | None = None,
    *,
    steered_prompts: Sequence[Prompt] | None = None,
) -> KLDamage:
    """Mean KL(unsteered || steered) of next-token distributions on unsteered continuations.

    For each prompt the *unsteered* model writes a greedy continuation (up to
    ``max_new_tokens``, its stop token included). Prompt + continuation is then teacher-forced
    once without and once with steering (no grad, attention mask and real-token position ids),
    and ``KL(p_unsteered || p_steered) = sum_v p_u(v) (log p_u(v) - log p_s(v))`` is taken at
    the positions that predict the generated tokens: the last prompt token (it predicts the first
    generated token) and every generated token except the last. So there is exactly one measured
    position per generated token. Prompt-only steering edits prompt columns only; its KL is still
    measured at those continuation positions, where it acts through attention. A zero vector gives
    exactly 0 (bit-identical logits).

    Args:
        model: the model.
        interventions: what to steer with; ``None`` or ``()`` measures the model against itself.
        prompts: neutral prompts (strings or message lists), e.g. the built-in utility prompts.
        config: continuation length, batch size and system message.
        steered_prompts: for prompt steering: the steered pass reads the same continuation after
            these prompts instead (e.g. the instruction behind a steering prompt); one per prompt.

    Returns:
        A :class:`KLDamage` in nats. Model weights are never modified.
    """
    cfg = config or KLConfig()
    if not prompts:
        raise ValueError("kl_damage needs at least one prompt")
    if steered_prompts is not None and len(steered_prompts) != len(prompts):
        raise ValueError(f"{len(steered_prompts)} steered prompts for {len(prompts)} prompts")
    ivs = _as_list(interventions)
    gen_cfg = GenerationConfig(max_new_tokens=cfg.max_new_tokens, backend=cfg.backend)
    sums, counts = [0.0] * len(prompts), [0] * len(prompts)
    for chunk in _length_chunks(model, prompts, cfg.batch_size):
        prompt = encode_prompts(model, [prompts[i] for i in chunk], system=cfg.system)
        gen = generate(model, prompt, (), gen_cfg)
        batch = continuation_batch(gen.prompt, gen.tokens, gen.lengths).to(model.device)
        where = predicting_mask(batch)
        s_batch, s_where = batch, where
        if steered_prompts is not None:  # same continuation tokens, so the same count per row
            s_prompt = encode_prompts(model, [steered_prompts[i] for i in chunk], system=cfg.system)
            s_batch = continuation_batch(s_prompt, gen.tokens, gen.lengths).to(model.device)
            s_where = predicting_mask(s_batch)
        with torch.no_grad():
            # The unsteered pass also runs in a (vector-free) steering context: for float64
            # models it carries the padding-row NaN fix, so both passes compute alike.
            with steering(model, (), batch):
                base = _logits(model, batch)[where].double().log_softmax(dim=-1)
            with steering(model, ivs, s_batch):
                steered = _logits(model, s_batch)[s_where].double().log_softmax(dim=-1)
        kl = (base.exp() * (base - steered)).sum(dim=-1).cpu()  # [positions], row-major order
        per_row = where.sum(dim=1).tolist()
        for i, part in zip(chunk, kl.split(per_row), strict=True):
            sums[i], counts[i] = float(part.sum()), int(part.numel())
    per_prompt = tuple(s / c for s, c in zip(sums, counts, strict=True))
    n = sum(counts)
    return KLDamage(bootstrap_mean(per_prompt), per_prompt, n, sum(sums) / n)
