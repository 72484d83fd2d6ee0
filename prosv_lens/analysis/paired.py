"""Paired teacher-forced runs: the same prompt + continuation, unsteered and steered.

Method. A prompt-only steering vector (PrOSV) adds ``alpha * v`` to ``blocks.{L}.hook_resid_post``
at a few prompt columns. Every later token can see that edit only by attending to those columns,
i.e. through the keys and values they expose at layers ``L+1 .. n_layers-1`` (layers ``<= L`` are
untouched everywhere). To study that route we fix one token sequence — the prompt followed by a
continuation, by default the steered model's own greedy answer — and run it twice, teacher-forced:
without and with the vector. Because the continuation is the same, any difference in logits at
a continuation column is caused by the steering and nothing else, and the steered run's logits
there equal the ones the KV-cache decoding loop produced (prompt-only steering edits no decoded
token).

Conventions shared by every analysis in this package:

* ``gen_pos`` ``t`` is the column of continuation token ``t``. The logits there predict token
  ``t + 1``; the first continuation token was predicted by the last prompt column, which for
  ``f2+l2`` is itself steered (its own residual changes, not just what it attends to), so it is
  not on the ``gen_pos`` axis. :func:`prompt_end_columns` gives that column where it is needed.
* ``gen_valid[b, t]``: row ``b`` has a token ``t`` (rows stop at different lengths);
  ``target_valid[b, t]``: it also has a token ``t + 1`` (a log-probability target).
* Keys and values are read and patched where the attention cache stores them:
  ``blocks.{l}.attn.hook_rot_k`` (after RoPE, before grouped-query expansion:
  ``[batch, pos, n_key_value_heads, d_head]``) and ``blocks.{l}.attn.hook_v`` (same shape).

Every forward pass runs inside :func:`prosv_lens.interventions.steering` (also with no vector,
so float64 models get the same NaN guard for padded rows) under ``torch.no_grad``; hooks are
removed afterwards.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from prosv_lens.generation import Generation, GenerationConfig, generate
from prosv_lens.interventions import AbstractIntervention, steering
from prosv_lens.models import LoadedModel
from prosv_lens.prompts import Prompt, TokenBatch, encode_prompts
from prosv_lens.types import HookName, Logits

GenFloat = Float[Tensor, "batch gen_pos"]
GenMask = Bool[Tensor, "batch gen_pos"]
GenLogprobs = Float[Tensor, "batch gen_pos d_vocab"]
HookFn = Callable[[Tensor, Any], Tensor | None]
ATTN_HOOKS = ("rot_k", "v", "pattern", "z")


def attn_hook_name(layer: int, kind: str) -> HookName:
    """``blocks.{layer}.attn.hook_{kind}`` for ``kind`` in ``rot_k, v, pattern, z``.

    ``hook_rot_k`` is the key after RoPE — what the KV cache stores, so patching it patches
    the cache; ``hook_k`` fires before RoPE and is not used here.
    """
    if kind not in ATTN_HOOKS:
        raise ValueError(f"unknown attention hook kind {kind!r}; use one of {ATTN_HOOKS}")
    return f"blocks.{layer}.attn.hook_{kind}"


def attn_out_hook_name(layer: int) -> HookName:
    """The attention block's output added to the residual, ``[batch, pos, d_model]``."""
    return f"blocks.{layer}.hook_attn_out"


def final_scale_hook_name() -> HookName:
    """The final norm's per-token scale (``sqrt(mean(x^2) + eps)``, ``[batch, pos, 1]``)."""
    return "ln_final.hook_scale"


@dataclass(frozen=True)
class PairedSequences:
    """Prompt + continuation as one teacher-forced batch, and where a vector acts on it.

    Attributes:
        batch: ``prompt_mask`` marks the prompt; continuation tokens are real non-prompt tokens.
        steered: columns the vector edits (resolved against ``batch``).
        gen_columns: ``[batch, gen_pos]`` column of continuation token ``t`` (0 where invalid).
        gen_valid: row has a continuation token ``t``.
        target_valid: row also has a token ``t + 1`` (a log-probability target).
        texts: the decoded continuations.
    """

    batch: TokenBatch
    steered: Bool[Tensor, "batch pos"]
    gen_columns: Int[Tensor, "batch gen_pos"]
    gen_valid: GenMask
    target_valid: GenMask
    texts: tuple[str, ...]

    @property
    def n_gen(self) -> int:
        return int(self.gen_columns.shape[1])

    @property
    def targets(self) -> Int[Tensor, "batch gen_pos"]:
        """Token ``t + 1`` of each row (0 where ``target_valid`` is False)."""
        nxt = torch.cat([self.gen_columns[:, 1:], self.gen_columns[:, -1:]], dim=1)
        ids = self.batch.input_ids.gather(1, nxt)
        return torch.where(self.target_valid, ids, torch.zeros_like(ids))


def _continuation_tokens(
    model: LoadedModel, continuation: "Generation | Sequence[str]", rows: int
) -> tuple[list[list[int]], tuple[str, ...]]:
    if isinstance(continuation, Generation):
        toks = [continuation.tokens[i, :n].tolist() for i, n in enumerate(continuation.lengths)]
        texts = continuation.texts
    else:
        toks = [model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in continuation]
        texts = tuple(continuation)
    if len(toks) != rows or any(len(t) == 0 for t in toks):
        raise ValueError(
            f"need one non-empty continuation per prompt ({rows}); got lengths "
            f"{[len(t) for t in toks]}"
        )
    return toks, texts


def pair_sequences(
    model: LoadedModel,
    prompts: "TokenBatch | Sequence[Prompt]",
    vector: AbstractIntervention,
    *,
    continuation: "Generation | Sequence[str] | None" = None,
    max_new_tokens: int = 64,
) -> PairedSequences:
    """Build the teacher-forced batch: each prompt followed by its continuation.

    Args:
        model: the model.
        prompts: a prompt :class:`TokenBatch` or prompts to encode (left padding).
        vector: the steering vector (its positions are resolved against the result).
        continuation: ``None`` generates the steered model's greedy answer (KV cache, stops at
            end of turn); a :class:`Generation` of these prompts, or strings (tokenised without
            special tokens), gives it.
        max_new_tokens: length cap of the generated continuation.
    """
    prompt = prompts if isinstance(prompts, TokenBatch) else encode_prompts(model, prompts)
    prompt = prompt.to("cpu")
    if continuation is None:
        cfg = GenerationConfig(max_new_tokens=max_new_tokens)
        continuation = generate(model, prompt, vector, cfg)
    toks, texts = _continuation_tokens(model, continuation, prompt.batch_size)
    n_gen = max(len(t) for t in toks)
    pad = model.tokenizer.pad_token_id
    pad = int(pad if pad is not None else model.tokenizer.eos_token_id)
    cont = torch.full((prompt.batch_size, n_gen), pad, dtype=torch.long)
    valid = torch.zeros((prompt.batch_size, n_gen), dtype=torch.bool)
    for i, t in enumerate(toks):
        cont[i, : len(t)] = torch.tensor(t)
        valid[i, : len(t)] = True
    batch = TokenBatch(
        torch.cat([prompt.input_ids, cont], dim=1),
        torch.cat([prompt.attention_mask, valid.long()], dim=1),
        torch.cat([prompt.prompt_mask, torch.zeros_like(valid)], dim=1),
        prompt.role_spans,
        prompt.texts,
    )
    steered = vector.positions.resolve(batch).mask
    cols = prompt.n_pos + torch.arange(n_gen).expand(prompt.batch_size, -1)
    target_valid = torch.cat([valid[:, 1:], torch.zeros_like(valid[:, :1])], dim=1)
    return PairedSequences(batch, steered, torch.where(valid, cols, 0), valid, target_valid, texts)


def prompt_end_columns(seq: PairedSequences) -> Int[Tensor, " batch"]:
    """The last prompt column of each row (it predicts continuation token 0)."""
    mask = seq.batch.prompt_mask.long()
    return (mask * torch.arange(mask.shape[1])).argmax(dim=1)


@contextmanager
def _grabbing(model: LoadedModel, names: Sequence[HookName]) -> Iterator[dict[str, Tensor]]:
    store: dict[str, Tensor] = {}

    def grabber(name: HookName) -> HookFn:
        def grab(act: Tensor, hook: Any) -> None:  # noqa: ARG001 - TL hook signature
            store[name] = act.detach().clone()

        return grab

    with model.bridge.hooks(fwd_hooks=[(n, grabber(n)) for n in names]):
        yield store


def forward(
    model: LoadedModel,
    seq: PairedSequences,
    vectors: "AbstractIntervention | Sequence[AbstractIntervention]" = (),
    *,
    cache: Sequence[HookName] = (),
    hooks: Sequence[tuple[HookName, HookFn]] = (),
) -> tuple[Logits, dict[str, Tensor]]:
    """One teacher-forced pass over ``seq`` under ``vectors`` and extra ``hooks``.

    Args:
        cache: hook names whose activations to return (after ``hooks`` at the same point ran,
            since those are attached first). Only these are stored.
        hooks: extra forward hooks (patches, knock-outs), attached inside the steering context.

    Returns:
        ``(logits, cache)`` on the model's device; weights are never modified.
    """
    batch = seq.batch.to(model.device)
    with torch.no_grad(), ExitStack() as stack:
        stack.enter_context(steering(model, vectors, batch))
        if hooks:
            stack.enter_context(model.bridge.hooks(fwd_hooks=list(hooks)))
        store = stack.enter_context(_grabbing(model, cache))
        logits = model.bridge(
            batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        )
    return logits, store


@dataclass(frozen=True)
class PairedRun:
    """Unsteered and steered logits over the same sequences, plus the requested caches."""

    unsteered: Logits
    steered: Logits
    cache_unsteered: dict[str, Tensor]
    cache_steered: dict[str, Tensor]


def run_pair(
    model: LoadedModel,
    seq: PairedSequences,
    vector: AbstractIntervention,
    *,
    cache: Sequence[HookName] = (),
) -> PairedRun:
    """The unsteered and the steered pass over ``seq``, caching only ``cache`` hook names."""
    u_logits, u_cache = forward(model, seq, (), cache=cache)
    s_logits, s_cache = forward(model, seq, vector, cache=cache)
    return PairedRun(u_logits, s_logits, u_cache, s_cache)


def kv_cache_names(layers: Sequence[int]) -> list[HookName]:
    """The key (after RoPE) and value hooks of ``layers``."""
    return [attn_hook_name(layer, k) for layer in layers for k in ("rot_k", "v")]


def layers_above(model: LoadedModel, vector: AbstractIntervention) -> tuple[int, ...]:
    """Layers whose attention can carry a prompt-only edit: ``L+1 .. n_layers-1``."""
    model.hook_name(vector.layer)  # raises on a layer out of range
    return tuple(range(vector.layer + 1, model.n_layers))


# ----------------------------------------------------------------------------- measures


def gen_logprobs(logits: Logits, seq: PairedSequences) -> GenLogprobs:
    """Float64 log-softmax at the ``gen_pos`` columns."""
    cols = seq.gen_columns.to(logits.device)
    picked = logits.gather(1, cols[..., None].expand(-1, -1, logits.shape[-1]))
    return torch.log_softmax(picked.double(), dim=-1).cpu()


def kl_div(ref: GenLogprobs, other: GenLogprobs, valid: GenMask) -> GenFloat:
    """``KL(P_ref || P_other)`` in nats at each position; 0 where ``valid`` is False."""
    kl = (ref.exp() * (ref - other)).sum(dim=-1)
    return torch.where(valid, kl, torch.zeros_like(kl))


def target_logprobs(logprobs: GenLogprobs, seq: PairedSequences) -> GenFloat:
    """Log-probability of continuation token ``t + 1`` at ``gen_pos`` ``t`` (0 where invalid)."""
    lp = logprobs.gather(-1, seq.targets[..., None]).squeeze(-1)
    return torch.where(seq.target_valid, lp, torch.zeros_like(lp))
