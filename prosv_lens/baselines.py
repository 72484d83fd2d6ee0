"""Baselines in the same framework, so every method is evaluated the same way.

* **DiffMean** (AxBench): mean of ``resid_post[L]`` over the tokens of the concept's
  (instruction, concept response) sequences minus the same over negative sequences, unit-normalised.
  Its factor comes from a post-hoc grid (:func:`factor_grid`).
* **Classic SV** (AxBench "SSV"): the direction trained alone at factor 1 on every token
  (:func:`classic_sv_config`, i.e. ``variant="fixed_alpha"``), then scaled by a post-hoc grid.
* **Prompt steering**: no vector; a steering instruction is prepended to the user turn
  (:func:`prompt_steered`), with AxBench's fallback template.

Factor *selection* (on held-out instructions, judged) belongs to the evaluation stage; here the
grids are only built.
"""

from collections.abc import Iterator, Sequence

from tqdm.auto import tqdm

from prosv_lens.concepts import ConceptData
from prosv_lens.directions import MeanDifference, mean_difference_of
from prosv_lens.generation import GenerationConfig, generate
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import LoadedModel
from prosv_lens.prompts import TokenBatch, encode_prompts
from prosv_lens.training.config import TrainConfig

# AxBench's factor grid for DiffMean / SSV (times max_act) and RePS's for learned-norm vectors.
AXBENCH_FACTORS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 4.0, 5.0)
REPS_FACTORS = (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 25.0, 30.0, 40.0, 50.0)
STEERING_PROMPT = (
    "You must answer the question with content related to {concept} even if it is not related "
    "to the question or it does not make sense."
)


def _sequences(model: LoadedModel, data: ConceptData, chunk: int = 8) -> Iterator[TokenBatch]:
    """Right-padded (instruction, response) batches of ``data``, ``chunk`` examples each."""
    for s in range(0, len(data), chunk):
        part = data.subset(range(s, min(len(data), s + chunk)))
        yield encode_prompts(
            model, list(part.prompts), padding_side="right", responses=list(part.responses)
        )


def diffmean(
    model: LoadedModel,
    positive: ConceptData,
    negative: ConceptData,
    layer: int,
    *,
    exclude_first: int = 1,
) -> MeanDifference:
    """AxBench DiffMean on chat-formatted (instruction, response) sequences."""
    return mean_difference_of(
        model,
        _sequences(model, positive),
        _sequences(model, negative),
        layer,
        exclude_first=exclude_first,
    )


def classic_sv_config(layer: int, **overrides: object) -> TrainConfig:
    """AxBench's SSV: direction only at factor 1 on every token (lr 0.01, 3 epochs, batch 6).

    AxBench initialises ``v`` to the constant 0.01; here ``v`` gets the framework's uniform
    init with ``c = 0.01 * sqrt(3)`` (the same expected coordinate magnitude)."""
    settings = {
        "positions": "all",
        "variant": "fixed_alpha",
        "lr_v": 0.01,
        "epochs": 3,
        "batch_size": 6,
        "c": 0.01 * 3**0.5,
    }
    return TrainConfig(layer=layer, **{**settings, **overrides})  # type: ignore[arg-type]


def factor_grid(
    vector: SteeringVector, factors: Sequence[float], *, unit: float = 1.0
) -> list[SteeringVector]:
    """Copies of ``vector`` with ``alpha = factor * unit`` for each factor (``unit``: e.g. a
    residual-norm or max-activation scale)."""
    return [
        vector.replace(alpha=f * unit, info={**vector.info, "factor": f, "factor_unit": unit})
        for f in factors
    ]


def prompt_steered(
    instructions: Sequence[str], concept: str, template: str = STEERING_PROMPT
) -> list[str]:
    """The prompt baseline: ``"{steering prompt}\\n\\nQuestion: {instruction}"`` for each instruction."""
    head = template.format(concept=concept)
    return [f"{head}\n\nQuestion: {inst}" for inst in instructions]


def with_neutral_responses(
    model: LoadedModel, data: ConceptData, *, max_new_tokens: int = 128, batch_size: int = 8
) -> ConceptData:
    """``data`` with ``negatives`` = the unsteered model's greedy answers to its prompts (the
    preference objective's losers, as RePS builds them with the target model)."""
    answers: list[str] = []
    cfg = GenerationConfig(max_new_tokens=max_new_tokens)
    for s in tqdm(
        range(0, len(data), batch_size), desc="neutral responses", disable=len(data) <= batch_size
    ):
        answers += generate(model, list(data.prompts[s : s + batch_size]), (), cfg).texts
    return ConceptData(
        data.name, data.prompts, data.responses, tuple(a if a.strip() else "OK." for a in answers)
    )
