"""Effect size per generated token: does a prompt-only edit fade along the answer?

Method. For each steering variant (by default the prompt-only vector and the full-sequence
vector with the same direction, layer and factor) we take its own greedy continuation (or a
given one), run it teacher-forced without and with the variant, and measure at every ``gen_pos``
column the divergence ``KL(steered || unsteered)`` of the next-token distribution. A full-sequence
vector (FSSV, positions ``all``) edits every token, so its effect has no reason to fade; a PrOSV
reaches later tokens only through attention to a few prompt columns, which later tokens may
attend to less and less. ``prompt_end_kl`` is the same divergence at the last prompt column,
which predicts the first answer token (for ``f2+l2`` it is itself steered).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from prosv_lens.analysis.paired import (
    forward,
    gen_logprobs,
    kl_div,
    pair_sequences,
    prompt_end_columns,
)
from prosv_lens.analysis.results import SavedResult
from prosv_lens.generation import Generation
from prosv_lens.interventions import SteeringVector
from prosv_lens.models import LoadedModel
from prosv_lens.positions import FSSV
from prosv_lens.prompts import Prompt, TokenBatch


@dataclass(frozen=True, eq=False)
class DecayResult(SavedResult):
    """Per-position steering effect of several variants.

    Attributes:
        names: the variants, in order.
        gen_valid: ``[variant, batch, gen_pos]`` (each variant has its own continuation; padded
            to the longest).
        kl: ``[variant, batch, gen_pos]`` ``KL(steered || unsteered)`` in nats (0 where invalid).
        prompt_end_kl: ``[variant, batch]`` the same at the last prompt column.
        texts: per variant, the continuation texts.
    """

    names: tuple[str, ...]
    gen_valid: np.ndarray
    kl: np.ndarray
    prompt_end_kl: np.ndarray
    texts: tuple[tuple[str, ...], ...]

    def mean_kl(self) -> np.ndarray:
        """``[variant, gen_pos]`` KL averaged over the rows that reach ``gen_pos``."""
        n = self.gen_valid.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.kl.sum(axis=1) / n


def prosv_vs_fssv(vector: SteeringVector, *, fssv_scale: float = 1.0) -> dict[str, SteeringVector]:
    """``{"prosv": vector, "fssv": the same direction at every token}`` (FSSV factor times
    ``fssv_scale``; a full-sequence vector often needs a smaller factor to stay fluent)."""
    return {"prosv": vector, "fssv": vector.replace(positions=FSSV).scaled(fssv_scale)}


def effect_decay(
    model: LoadedModel,
    prompts: "TokenBatch | Sequence[Prompt]",
    variants: Mapping[str, SteeringVector],
    *,
    continuation: "Generation | Sequence[str] | None" = None,
    max_new_tokens: int = 64,
) -> DecayResult:
    """``KL(steered || unsteered)`` at every answer position, for each variant.

    Args:
        model: the model.
        prompts: prompts or a prompt batch.
        variants: name -> vector (e.g. :func:`prosv_vs_fssv`).
        continuation: a shared continuation; ``None`` = each variant's own greedy answer.
        max_new_tokens: cap of the generated continuations.

    Returns:
        A :class:`DecayResult`. A zero vector gives exactly 0 everywhere.
    """
    if not variants:
        raise ValueError("effect_decay needs at least one variant")
    kls, valids, ends, texts = [], [], [], []
    for vec in variants.values():
        seq = pair_sequences(
            model, prompts, vec, continuation=continuation, max_new_tokens=max_new_tokens
        )
        u = forward(model, seq, ())[0]
        s = forward(model, seq, vec)[0]
        kls.append(kl_div(gen_logprobs(s, seq), gen_logprobs(u, seq), seq.gen_valid))
        end = prompt_end_columns(seq).to(u.device)
        rows = torch.arange(end.shape[0], device=u.device)
        lu = torch.log_softmax(u[rows, end].double(), dim=-1)
        ls = torch.log_softmax(s[rows, end].double(), dim=-1)
        ends.append((ls.exp() * (ls - lu)).sum(dim=-1).cpu())
        valids.append(seq.gen_valid)
        texts.append(seq.texts)
    width = max(k.shape[1] for k in kls)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]))

    return DecayResult(
        names=tuple(variants),
        gen_valid=torch.stack([pad(v) for v in valids]).numpy(),
        kl=torch.stack([pad(k) for k in kls]).numpy(),
        prompt_end_kl=torch.stack(ends).numpy(),
        texts=tuple(texts),
    )
