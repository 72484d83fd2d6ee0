"""Stage 5 — the ``hf`` generation backend: steered decoding by the Hugging Face model's own
``generate`` and KV cache, with the bridge backend's position semantics.

Why: the bridge (:mod:`prosv_lens.generation`'s reference loop) runs every forward pass through
TransformerLens's wrappers — a hook point per sub-module and TransformerLens's own eager attention —
and a Python decoding loop. When thousands of answers are generated for judging, that overhead
dominates. This backend runs the plain Hugging Face modules instead.

How:

* :func:`hf_causal_lm` gives the ``*ForCausalLM`` under the bridge *without* TransformerLens's
  wrappers: a new module tree whose every module is the Hugging Face module the bridge wraps
  (shallow copies, so each parameter and buffer is shared — no weight is copied or changed, and
  hooks registered on the new tree never reach the bridge's modules). Its ``generation_config`` is
  blank: prosv-lens passes every decoding setting itself, so a checkpoint's defaults (``top_k``,
  repetition penalties) never apply.
* The output of decoder layer ``L`` (``hf.get_decoder().layers[L]``) is exactly TransformerLens's
  ``blocks.{L}.hook_resid_post`` (the bridge's block calls that layer and feeds its output to
  that hook point). A steering vector becomes a PyTorch forward hook on that layer, registered only
  for the ``generate`` call and removed afterwards, also when it raises.
* The hook learns which absolute columns it sees from the KV cache, never from the activation's
  length: after layer ``L`` has run, its cache holds ``offset + width`` tokens. In prefill the
  offset is 0 and the hook edits the prompt columns its :class:`ResolvedPositions` selects; while
  decoding, a prompt-only vector returns at once and an ``all`` vector edits the new token. Without
  a cache (``use_cache=False``) every pass starts at column 0.
* Hugging Face ``generate`` needs left padding: a right-padded batch is re-padded to the left (each
  row shifted whole, role spans with it), which moves no token relative to its own row.

Equivalence with the bridge (``tests/test_hf_generation.py``): on fp32 tiny checkpoints, greedy
tokens are equal and next-token logits agree within 1e-4 (in practice exactly, for left padding)
for every position spec on Llama and Gemma-2 and for ``all`` / ``f2+l2`` on Qwen2 and Gemma-3.
Right-padded batches are where the two may differ on sliding-window models (Gemma-2/3): there the
bridge loop's decoded tokens sit behind the padding, inside the window, while this backend's
re-padded rows match each prompt generated alone. Seeded sampling repeats exactly but draws other
samples than the bridge backend with the same seed (see :func:`seeded`).
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig as HFGenerationConfig
from transformers import GenerationMixin, PreTrainedModel
from transformers.generation.utils import GenerateDecoderOnlyOutput

from prosv_lens.errors import ProsvError, SteeringStateError
from prosv_lens.generation import GenerationConfig
from prosv_lens.hf_model import hf_causal_lm
from prosv_lens.interventions import AbstractIntervention, check_compatible
from prosv_lens.models import LoadedModel
from prosv_lens.positions import ResolvedPositions
from prosv_lens.prompts import TokenBatch
from prosv_lens.types import StepLogits, Tokens

HFHook = Callable[[nn.Module, tuple, dict, Any], Any]


def decoder_layers(hf: PreTrainedModel) -> nn.ModuleList:
    """Decoder layer ``L``'s output is ``blocks.{L}.hook_resid_post``."""
    return hf.get_decoder().layers


def left_padded(batch: TokenBatch) -> TokenBatch:
    """``batch`` with every row's real tokens moved to the right end (role spans shifted along).

    Returns the batch itself when it is already left-padded.

    Raises:
        ProsvError: a row has no real token, or padding inside its tokens.
    """
    mask = batch.attention_mask.bool().cpu()
    n_pos = batch.n_pos
    shifts = []
    for b in range(batch.batch_size):
        cols = mask[b].nonzero().flatten()
        if len(cols) == 0 or int(cols[-1] - cols[0]) + 1 != len(cols):
            why = "no real token" if len(cols) == 0 else "padding between its tokens"
            raise ProsvError(
                f"row {b} of the batch has {why}: the hf backend needs each row's tokens in one "
                "run, padded on one side."
            )
        shifts.append(n_pos - 1 - int(cols[-1]))
    if not any(shifts):
        return batch
    shift = torch.tensor(shifts, device=batch.input_ids.device)
    index = (torch.arange(n_pos, device=shift.device) - shift[:, None]) % n_pos
    spans = tuple(
        {role: tuple((s + sh, e + sh) for s, e in ss) for role, ss in row.items()}
        for row, sh in zip(batch.role_spans, shifts, strict=False)
    )
    return TokenBatch(
        batch.input_ids.gather(1, index),
        batch.attention_mask.gather(1, index),
        batch.prompt_mask.gather(1, index),
        spans,
        batch.texts,
    )


def _offset(kwargs: dict, width: int, layer: int) -> int:
    """Absolute column of the first token in this pass through decoder layer ``layer``."""
    position = kwargs.get("cache_position")  # transformers 4.x passes it; 5.x does not
    if isinstance(position, torch.Tensor) and position.numel():
        return int(position.flatten()[0])
    cache = kwargs.get("past_key_values", kwargs.get("past_key_value"))
    if cache is None:
        return 0  # no KV cache: every pass covers the whole sequence
    return int(cache.get_seq_length(layer)) - width  # the layer has already cached this pass


def _steering_hook(
    intervention: AbstractIntervention, resolved: ResolvedPositions, layer: int
) -> HFHook:
    rows, known = resolved.mask.shape

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:  # noqa: ARG001
        resid = output[0] if isinstance(output, tuple) else output
        if resid.shape[0] != rows:
            raise SteeringStateError(
                f"steering was prepared for a batch of {rows} but decoder layer {layer} ran on "
                f"{resid.shape[0]} rows."
            )
        width = resid.shape[1]
        offset = _offset(kwargs, width, layer)
        if offset < 0 or (offset == 0 and width < known):
            raise SteeringStateError(
                f"decoder layer {layer} saw {width} columns at offset {offset} but steering was "
                f"prepared for a {known}-column prompt: the KV cache and the batch disagree."
            )
        mask = resolved.chunk(offset, width)
        if mask is None:  # a prompt-only vector during decoding: nothing to do, no cost
            return None
        edited = intervention.edit(resid, mask.to(resid.device))
        return (edited, *output[1:]) if isinstance(output, tuple) else edited

    return hook


def _finite_output(module: nn.Module, args: tuple, output: Any) -> Any:  # noqa: ARG001
    """Zero NaN in a decoder layer's output. Hugging Face's eager attention softmaxes in float32,
    so for a float64 model the -1.8e308 mask of a fully masked query row (a leading pad of a
    left-padded row) becomes -inf and the pad column NaN, which the next layer's keys and values
    then carry into real tokens (0 * NaN). Real columns never hold NaN, so nothing else changes
    (the bridge's steering context does the same to attention patterns)."""
    if isinstance(output, tuple):
        return (torch.nan_to_num(output[0], nan=0.0), *output[1:])
    return torch.nan_to_num(output, nan=0.0)


@contextmanager
def hf_steering(
    model: LoadedModel,
    hf: PreTrainedModel,
    interventions: "AbstractIntervention | Sequence[AbstractIntervention]",
    batch: TokenBatch,
) -> Iterator[None]:
    """Steer ``hf``'s forward passes in the ``with`` body; hooks are removed on exit, also on error.

    Positions are resolved against ``batch`` (left-padded, as ``generate`` sees it) before any hook
    is attached. Several interventions compose: at the same layer their edits add up. For a float64
    model every decoder layer also zeroes NaN in padding columns (see :func:`_finite_output`).
    """
    if isinstance(interventions, AbstractIntervention):
        interventions = [interventions]
    layers = decoder_layers(hf)
    hooks = []
    for iv in interventions:
        check_compatible(model, iv)
        hooks.append((iv.layer, _steering_hook(iv, iv.positions.resolve(batch), iv.layer)))
    handles = []
    try:
        if model.dtype == torch.float64:
            for block in layers:
                handles.append(block.register_forward_hook(_finite_output))
        for layer, fn in hooks:
            handles.append(layers[layer].register_forward_hook(fn, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed the default generator of ``device`` (and the CPU's) for the body, then restore them.

    Hugging Face ``generate`` takes no ``torch.Generator``; it samples with the device's default
    generator. Inside :func:`torch.random.fork_rng` that generator is seeded with ``seed``, so the
    same seed gives the same samples and the caller's RNG state is unchanged afterwards. ``None``
    leaves the global RNG as is (unseeded sampling).
    """
    if seed is None:
        yield
        return
    cuda = []
    if device.type == "cuda":
        cuda = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def _decoding_config(
    cfg: GenerationConfig, stops: list[int], pad_id: int, record_logits: bool
) -> HFGenerationConfig:
    sampling: dict[str, Any] = {}
    if cfg.do_sample:  # top_k=0 disables Hugging Face's default top-k of 50
        sampling = {"temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": 0}
    return HFGenerationConfig(
        max_new_tokens=cfg.max_new_tokens,
        do_sample=cfg.do_sample,
        **sampling,
        eos_token_id=stops if cfg.stop_at_eos else None,
        pad_token_id=pad_id,
        use_cache=cfg.use_cache,
        return_dict_in_generate=True,
        output_logits=record_logits,
    )


def generate_hf(
    model: LoadedModel,
    batch: TokenBatch,
    interventions: "AbstractIntervention | Sequence[AbstractIntervention]",
    cfg: GenerationConfig,
    *,
    record_logits: bool = False,
    hf: PreTrainedModel | None = None,
) -> tuple[Tokens, tuple[int, ...], StepLogits | None]:
    """Steered decoding by Hugging Face ``generate`` (use :func:`prosv_lens.generate` with
    ``GenerationConfig(backend="hf")``, which builds the :class:`Generation`).

    Args:
        model: the model.
        batch: the prompts, left- or right-padded (right padding is re-padded to the left).
        interventions: steering vectors to apply.
        cfg: decoding settings (``progress`` is ignored).
        record_logits: also return each step's raw next-token logits (before temperature/top-p).
        hf: the plain model to run (default: a fresh :func:`hf_causal_lm` view of ``model``).

    Returns:
        ``(tokens, lengths, step_logits)`` on the CPU: generated ids ``[batch, new_pos]`` (the pad
        id after a row stops), tokens per row with its stop token, and the logits or ``None``.
    """
    hf = hf if hf is not None else hf_causal_lm(model)
    if not isinstance(hf, GenerationMixin):  # every *ForCausalLM is; PreTrainedModel alone is not
        raise ProsvError(f"{type(hf).__name__} has no generate(): pass a *ForCausalLM model as hf")
    batch = left_padded(batch.to(model.device))
    stops = list(model.stop_token_ids)
    pad_id = model.tokenizer.pad_token_id
    pad_id = int(pad_id if pad_id is not None else model.tokenizer.eos_token_id)
    decoding = _decoding_config(cfg, stops, pad_id, record_logits)
    with (
        hf_steering(model, hf, interventions, batch),
        seeded(cfg.seed if cfg.do_sample else None, model.device),
    ):
        # transformers types generate's self as its GenerativePreTrainedModel Protocol (written
        # for the ty checker), which mypy does not match against PreTrainedModel's attributes.
        out = hf.generate(  # type: ignore[misc]
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            generation_config=decoding,
        )
    # return_dict_in_generate=True without beams, on a decoder-only model: this output type.
    assert isinstance(out, GenerateDecoderOnlyOutput), type(out).__name__
    tokens = out.sequences[:, batch.n_pos :].cpu()
    width = tokens.shape[1]
    lengths = torch.full((batch.batch_size,), width)
    if cfg.stop_at_eos:
        is_stop = torch.isin(tokens, torch.tensor(stops))
        lengths = torch.where(is_stop.any(dim=1), is_stop.int().argmax(dim=1) + 1, lengths)
    step_logits = None
    if record_logits:
        assert out.logits is not None, "output_logits=True returns every step's logits"
        step_logits = torch.stack(out.logits, dim=1).float().cpu()
    return tokens, tuple(int(n) for n in lengths.tolist()), step_logits
